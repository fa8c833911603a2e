//! `veil-keyservice [serve] | keyring init | keyring status`; see `docs/keyservice.md`.

fn main() -> std::process::ExitCode {
    veil_keyservice::cli::main()
}
