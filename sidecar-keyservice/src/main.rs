//! `veil-keyservice [serve] | check | keyring <init|status|rotate-root|rewrap|verify|destroy>`;
//! see `docs/keyservice.md`.

fn main() -> std::process::ExitCode {
    veil_keyservice::cli::main()
}
