//! The `meridian` command.
fn main() -> std::process::ExitCode {
    meridian::cli::main()
}
