//! The `optiwatch` binary: everything lives in the library; this only turns
//! the result into the process exit code.

fn main() {
    std::process::exit(optiwatch::cli::main().code());
}
