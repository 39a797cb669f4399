//! A throwaway PostgreSQL cluster for the shared-store tests: `initdb` and
//! `pg_ctl` from Debian's `postgresql` package (on PATH, or in
//! /usr/lib/postgresql/N/bin) in a temp folder, on a free port of
//! 127.0.0.1 with its unix socket in the temp folder. The superuser
//! `postgres` logs in over the socket without a password; the role
//! `optiwatch` (owner of the database `optiwatch`) logs in over TCP with
//! the password [`PASSWORD`], so the tests use password authentication
//! as a real deployment does. PostgreSQL refuses to run as root: as root
//! the cluster runs as `nobody`. Dropping a [`Pg`] stops the server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The password of the `optiwatch` role.
pub const PASSWORD: &str = "pw-for-the-tests-1f3b";

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The folder holding `initdb` and `pg_ctl`, if the package is installed.
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

/// As root, runs `cmd` as nobody (PostgreSQL refuses root).
fn as_owner(program: &Path) -> Command {
    // SAFETY: geteuid(2) only returns a number.
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Pg {
    /// A running cluster with the `optiwatch` role and database; `None`
    /// (after printing why) where PostgreSQL is not installed.
    pub fn start() -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            let test = std::thread::current()
                .name()
                .unwrap_or("this test")
                .to_string();
            eprintln!("skipped {test}: PostgreSQL is not installed (initdb not found; apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // SAFETY: geteuid(2) only returns a number.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        }
        let mut initdb = as_owner(&bin.join("initdb"));
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]);
        run(initdb, "initdb");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut start = as_owner(&bin.join("pg_ctl"));
            start.arg("-D").arg(&data).arg("-l").arg(data.join("log")).args([
                "-w",
                "-t",
                "60",
                "-o",
                &format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
                    data.display()
                ),
                "start",
            ]);
            let out = start.output().unwrap();
            if out.status.success() {
                let pg = Pg { dir, bin, port };
                pg.admin(&[
                    &format!("CREATE ROLE optiwatch LOGIN PASSWORD '{PASSWORD}'"),
                    "CREATE DATABASE optiwatch OWNER optiwatch",
                ]);
                return Some(pg);
            }
            last = std::fs::read_to_string(data.join("log")).unwrap_or_default();
        }
        panic!("pg_ctl start failed three times: {last}");
    }

    /// `postgres://optiwatch@127.0.0.1:PORT/optiwatch` (no password).
    pub fn url(&self) -> String {
        format!("postgres://optiwatch@127.0.0.1:{}/optiwatch", self.port)
    }

    /// A file holding the password, for `[shared] password_file`.
    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("pgpassword");
        std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
        path
    }

    /// Turns TLS on with a fresh CA and a server certificate for
    /// 127.0.0.1 (made with `openssl`); returns the CA's PEM file.
    pub fn enable_tls(&self) -> PathBuf {
        let dir = self.dir.path();
        let data = dir.join("data");
        let sh = |script: &str| super::sh(dir, script);
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
            -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
        );
        sh("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null \
            && printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext \
            && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
               -extfile ext -out server.pem 2>/dev/null");
        for name in ["server.pem", "server.key"] {
            std::fs::copy(dir.join(name), data.join(name)).unwrap();
            // SAFETY: geteuid(2) only returns a number.
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(data.join(name), Some(65534), Some(65534)).unwrap();
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        self.admin(&[
            "ALTER SYSTEM SET ssl_cert_file = 'server.pem'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ]);
        dir.join("ca.pem")
    }

    /// A number the query (as the superuser, in the `optiwatch` database)
    /// returns in its first row and column.
    pub fn number(&self, sql: &str) -> i64 {
        self.as_superuser("optiwatch", async |client| {
            let row = client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            row.get::<_, i64>(0)
        })
    }

    /// Runs statements as the superuser over the unix socket.
    pub fn admin(&self, statements: &[&str]) {
        self.as_superuser("postgres", async |client| {
            for sql in statements {
                client
                    .batch_execute(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        })
    }

    /// Connects to `dbname` as the superuser over the unix socket and runs
    /// `work` with the connection.
    fn as_superuser<T>(
        &self,
        dbname: &str,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> T,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::Config::new()
                .host_path(self.dir.path().join("data"))
                .port(self.port)
                .user("postgres")
                .dbname(dbname)
                .connect(tokio_postgres::NoTls)
                .await
                .expect("connect as postgres over the socket");
            tokio::spawn(conn);
            work(&client).await
        })
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut stop = as_owner(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}
