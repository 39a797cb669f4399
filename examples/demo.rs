//! The end-to-end demo: `cargo run --example demo`.
//!
//! Starts the fake Optimole API on 127.0.0.1, lays out a small media folder,
//! runs the real `optiwatch scan` binary around an edit, and shows what
//! Optimole received and the token the site got. Nothing leaves the machine.

mod common;

use std::path::Path;
use std::process::Command;

use common::build_optiwatch;
use common::fake_api::{FakeApi, GOOD_KEY};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let binary = build_optiwatch()?;
    let api = FakeApi::start();
    let site = tempfile::Builder::new()
        .prefix("optiwatch-demo")
        .tempdir()?;
    let media = site.path().join("uploads");
    let files = [
        "2026/11/sunset.jpg",
        "2026/11/team photo.png",
        "2026/11/café menu.webp",
        "2026/10/logo.svg",
        "2026/10/notes.txt",
    ];
    for (n, rel) in files.iter().enumerate() {
        write(&media.join(rel), format!("original image {n}").as_bytes())?;
    }
    let config = site.path().join("watcher.toml");
    std::fs::write(
        &config,
        format!(
            r#"[api]
base_url = "{}"

[[rules]]
dir = "uploads"
url = "https://example.com/wp-content/uploads"
also = ["https://www.example.com/wp-content/uploads"]

[token]
file = "optimole-token"
"#,
            api.base_url()
        ),
    )?;
    println!("fake Optimole API on {}", api.base_url());
    println!(
        "site folder {}\n{}\n",
        site.path().display(),
        std::fs::read_to_string(&config)?
    );

    let scan = |title: &str| -> Result<(), Box<dyn std::error::Error>> {
        println!("==> {title}\n$ optiwatch scan");
        let out = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .arg("scan")
            .env("OPTIMOLE_API_KEY", GOOD_KEY)
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        print!("{}", String::from_utf8_lossy(&out.stderr));
        println!("(exit code {})", out.status.code().unwrap_or(-1));
        show_requests(&api);
        api.clear();
        Ok(())
    };

    scan("first scan: records every image's hash (a baseline), invalidates nothing")?;

    println!("==> the site changes: one image replaced, one touched (same bytes), one deleted, one added");
    write(&media.join("2026/11/sunset.jpg"), b"a better sunset")?;
    let touched = std::fs::File::options()
        .write(true)
        .open(media.join("2026/11/team photo.png"))?;
    touched.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))?;
    std::fs::remove_file(media.join("2026/10/logo.svg"))?;
    write(&media.join("2026/11/new.gif"), b"brand new")?;
    println!();

    scan(
        "second scan: invalidates exactly the replaced and the deleted image, then gets one token",
    )?;
    let token = std::fs::read_to_string(site.path().join("optimole-token"))?;
    println!(
        "published token file {} contains: {token}\n",
        site.path().join("optimole-token").display()
    );

    scan("third scan: nothing changed, nothing sent")?;
    Ok(())
}

fn show_requests(api: &FakeApi) {
    let requests = api.requests();
    if requests.is_empty() {
        println!("Optimole received: nothing\n");
        return;
    }
    println!("Optimole received:");
    for r in requests {
        println!("  {} {} -> HTTP {}", r.method, r.path, r.status);
        for asset in &r.assets {
            println!("      {asset}");
        }
    }
    for token in api.tokens_issued() {
        println!("  (answered token {token})");
    }
    println!();
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("file paths have a folder"))?;
    std::fs::write(path, bytes)
}
