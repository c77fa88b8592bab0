fn main() -> std::process::ExitCode {
    anamo::cli::main()
}
