//! The `autolink` command; everything lives in the library.

fn main() -> std::process::ExitCode {
    autolink::cli::main()
}
