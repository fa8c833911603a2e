//! The command line: `veil-keyservice [serve]`, `check`, `keyring …` (init and status here,
//! the other keyring commands in [`crate::manage`]).
//!
//! Exit status 0 only on success; otherwise one line `error: …` on stderr that names the
//! variable, flag, file or field at fault, and exit status 1 (2 for command-line usage errors).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use veil_core::crypto::keys::{Epoch, Kid};

use crate::config::{
    ConfigError, Flags, KeyringConfig, LogConfig, ProcessEnv, ServeConfig, Vars, ENV_LISTEN,
};
use crate::keyring::{
    now_unix, rfc3339_utc, Keyring, KeyringDigest, KeyringError, RootState, Roots,
};
use crate::logging::{self, ANNOUNCE_TARGET};
use crate::manage;
use crate::providers::{
    self as provider, KeyProvider, LocalProvider, ProviderConfig, ProviderError, ProviderKind,
    LOCAL_WARNING,
};
use crate::server::{self, AppState};

#[derive(Debug, Parser)]
#[command(
    name = "veil-keyservice",
    version,
    about = "Veil's keyservice: holds the keyring's roots and hands data keys to the filter.",
    after_help = "Configuration comes from environment variables (see docs/keyservice.md); \
                  the flags above override them."
)]
pub struct Cli {
    /// Keyring file [env: VEIL_KEYRING] [default: veil-keyring.json]
    #[arg(long, global = true, value_name = "PATH")]
    pub keyring: Option<PathBuf>,
    /// Key provider: local | aws-kms | aws-cloudhsm | azure-keyvault [env: KMS_PROVIDER] [default: local]
    #[arg(long, global = true, value_name = "NAME")]
    pub kms_provider: Option<String>,
    /// The local provider's KEK file [env: VEIL_LOCAL_KEK_FILE] [default: veil-local-kek.key]
    #[arg(long, global = true, value_name = "PATH")]
    pub local_kek_file: Option<PathBuf>,
    /// Months per epoch, 1..=120 [env: ENCRYPTION_ROTATION_MONTHS] [default: 12]
    #[arg(long, global = true, value_name = "N")]
    pub rotation_months: Option<String>,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Listen address [env: VEIL_KEYSERVICE_LISTEN] [default: 127.0.0.1:9911]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// File holding the bearer token [env: VEIL_KEYSERVICE_TOKEN_FILE] (or VEIL_KEYSERVICE_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve data keys over HTTP (the default).
    Serve(ServeArgs),
    /// Manage the keyring.
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Validate the configuration and probe the provider (a readable report).
    Check,
    /// Print Veil's settings for a seed appliance's environment (docs/migrating.md).
    Migrate {
        /// The appliance: `moesif` (Secure Proxy) or `mte-relay` (MTE Relay server).
        seed: crate::migrate::Seed,
        /// Read the appliance's variables from this env file (`KEY=VALUE` lines) instead of
        /// this process's environment.
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// The relay's server key (protocol v2).
    #[command(subcommand)]
    RelayKey(RelayKeyCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum RelayKeyCommand {
    /// Print the current relay server key's configuration (RFC 9458 key config, base64url,
    /// one line): what relay clients pin (`veil-relay --server-key`,
    /// `createRelay({serverKey})`). It changes only with `keyring rotate-relay-key`.
    Show,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeyringCommand {
    /// Create a new keyring with one root and one relay server key (and, for the local
    /// provider, the KEK file if missing).
    Init,
    /// Show each root and whether it unwraps and matches its check value.
    Status,
    /// Start a new root version for new data; older versions keep decrypting.
    RotateRoot,
    /// Re-wrap every root under another KEK or provider, without touching data.
    Rewrap {
        /// A setting of the target provider, overriding the environment for it
        /// (repeatable), e.g. `--to KMS_PROVIDER=aws-kms --to AWS_CUSTOMER_KEY_ID=arn:…`.
        #[arg(long = "to", value_name = "VAR=VALUE", required = true)]
        to: Vec<String>,
    },
    /// Unwrap every root (active and disabled) and check its key-check value.
    Verify,
    /// `relay-key show`, run like a keyring command (not a `keyring` subcommand).
    #[command(skip)]
    RelayKeyShow,
    /// Start a new relay server key (the new pin); older ones keep pairing until destroyed.
    /// On a keyring written before relay protocol v2, creates its first.
    RotateRelayKey,
    /// Crypto-shred one relay server key: clients that pin it can no longer pair. IRREVERSIBLE.
    DestroyRelayKey {
        /// The relay key id to destroy (`1` or `k1`).
        id: String,
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Crypto-shred one root version: remove it from the keyring. IRREVERSIBLE.
    Destroy {
        /// The root version to destroy (`3` or `r3`).
        version: String,
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

/// A failure of a command: printed as `error: <message>`.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure(e.to_string())
    }
}
impl From<KeyringError> for Failure {
    fn from(e: KeyringError) -> Self {
        Failure(e.to_string())
    }
}
impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure(e.to_string())
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli, &ProcessEnv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the message contains.
            let line = e.0.replace(['\n', '\r'], " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line against `vars`.
pub fn run(cli: Cli, vars: &dyn Vars) -> Result<(), Failure> {
    let mut check = false;
    let (serve_args, keyring_cmd) = match cli.command {
        None => (cli.serve.clone(), None),
        Some(Command::Serve(a)) => (
            ServeArgs {
                listen: a.listen.or(cli.serve.listen.clone()),
                token_file: a.token_file.or(cli.serve.token_file.clone()),
            },
            None,
        ),
        Some(Command::Check) => {
            check = true;
            (cli.serve.clone(), None)
        }
        Some(Command::Migrate { seed, env_file }) => {
            return crate::migrate::run(seed, env_file.as_deref()).map_err(Failure::from);
        }
        Some(Command::RelayKey(RelayKeyCommand::Show)) => {
            if cli.serve.listen.is_some() || cli.serve.token_file.is_some() {
                return Err(Failure(
                    "--listen and --token-file apply to `serve` only".into(),
                ));
            }
            (ServeArgs::default(), Some(KeyringCommand::RelayKeyShow))
        }
        Some(Command::Keyring(k)) => {
            if cli.serve.listen.is_some() || cli.serve.token_file.is_some() {
                return Err(Failure(
                    "--listen and --token-file apply to `serve` only".into(),
                ));
            }
            (ServeArgs::default(), Some(k))
        }
    };
    let flags = Flags {
        keyring: cli.keyring,
        kms_provider: cli.kms_provider,
        local_kek_file: cli.local_kek_file,
        rotation_months: cli.rotation_months,
        listen: serve_args.listen,
        token_file: serve_args.token_file,
    };

    // Validate every setting before touching a file or a socket.
    let log = LogConfig::from_vars(vars)?;
    if check {
        let runtime = runtime()?;
        logging::init(&log, std::io::stderr)?;
        return runtime.block_on(manage::check(vars, &flags));
    }
    let kcfg = KeyringConfig::from_vars(vars, &flags)?;
    let scfg = match keyring_cmd {
        None => Some(ServeConfig::from_vars(vars, &flags)?),
        Some(_) => None,
    };

    let runtime = runtime()?;

    match (keyring_cmd, scfg) {
        (Some(cmd), _) => {
            logging::init(&log, std::io::stderr)?;
            runtime.block_on(async {
                match cmd {
                    KeyringCommand::Init => keyring_init(&kcfg).await,
                    KeyringCommand::Status => keyring_status(&kcfg).await,
                    KeyringCommand::RotateRoot => manage::rotate_root(&kcfg).await,
                    KeyringCommand::Rewrap { to } => manage::rewrap(&kcfg, vars, &flags, &to).await,
                    KeyringCommand::Verify => manage::verify(&kcfg).await,
                    KeyringCommand::RelayKeyShow => manage::relay_key_show(&kcfg).await,
                    KeyringCommand::RotateRelayKey => manage::rotate_relay_key(&kcfg).await,
                    KeyringCommand::DestroyRelayKey { id, yes } => {
                        manage::destroy_relay_key(&kcfg, &id, yes).await
                    }
                    KeyringCommand::Destroy { version, yes } => {
                        manage::destroy(&kcfg, &version, yes).await
                    }
                }
            })
        }
        (None, Some(scfg)) => {
            logging::init(&log, std::io::stdout)?;
            let r = runtime.block_on(serve(&kcfg, scfg));
            if let Err(e) = &r {
                tracing::error!(error = %e, "veil-keyservice did not start or stopped with an error");
            }
            r
        }
        (None, None) => Err(Failure("internal: serve without its settings".into())),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the async runtime: {e}")))
}

/// The local provider's loud warning: logged by `serve`, printed to stderr by the CLI.
pub fn warn_local(provider: &dyn KeyProvider, as_log: bool) {
    if provider.kind() != ProviderKind::Local {
        return;
    }
    if as_log {
        tracing::warn!(target: ANNOUNCE_TARGET, key_id = provider.key_id(), "{LOCAL_WARNING}");
    } else {
        eprintln!("WARNING: {LOCAL_WARNING}");
    }
}

/// `keyring init`: one new active root r1 in a new keyring; never replaces one.
pub async fn keyring_init(cfg: &KeyringConfig) -> Result<(), Failure> {
    let path = &cfg.keyring;
    if path.symlink_metadata().is_ok() {
        return Err(KeyringError::Exists {
            path: path.display().to_string(),
        }
        .into());
    }
    let provider: Box<dyn KeyProvider> = match &cfg.provider {
        ProviderConfig::Local(local) => {
            let kek = &local.kek_file;
            let p = if kek.symlink_metadata().is_ok() {
                let p = LocalProvider::open(kek, &local.kek_file_from)?;
                println!(
                    "using existing local KEK file {} (key id {})",
                    kek.display(),
                    p.key_id()
                );
                p
            } else {
                let p = LocalProvider::create(kek, &local.kek_file_from)?;
                println!(
                    "created local KEK file {} (mode 0600, key id {}): keep it safe and \
                     separate from the keyring; without it the keyring cannot be unwrapped",
                    kek.display(),
                    p.key_id()
                );
                p
            };
            Box::new(p)
        }
        _ => provider::open(cfg).await?,
    };
    warn_local(provider.as_ref(), false);

    let (root, entry) = manage::new_root(1, provider.as_ref()).await?;
    // Prove the round trip before anything is written.
    entry
        .unwrap(provider.as_ref())
        .await
        .map_err(|m| Failure(format!("keyring init: the new root does not unwrap: {m}")))?;
    drop(root);
    let relay_key = manage::new_relay_key(1, provider.as_ref()).await?;
    let keyring = Keyring {
        format: crate::keyring::FORMAT.to_string(),
        roots: vec![entry],
        relay_keys: vec![relay_key],
    };
    keyring.write_new(path)?;
    println!(
        "created keyring {}: root versions [1], current r1 (active), relay server key k1 \
         (`relay-key show` prints its pin), provider {}, key id {}",
        path.display(),
        provider.kind(),
        provider.key_id()
    );
    Ok(())
}

/// `keyring status`: each root and relay key, whether it unwraps and matches its check.
pub async fn keyring_status(cfg: &KeyringConfig) -> Result<(), Failure> {
    let path = &cfg.keyring;
    let keyring = Keyring::load(path)?;
    let provider = provider::open(cfg).await;
    println!("keyring   {} ({})", path.display(), keyring.format);
    match &provider {
        Ok(p) => {
            warn_local(p.as_ref(), false);
            println!("provider  {}", p.description());
        }
        Err(e) => println!("provider  {} (cannot open: {e})", cfg.provider.kind()),
    }
    let now = now_unix();
    let epoch = Epoch::containing(now, cfg.rotation);
    let next = epoch.next(cfg.rotation);
    println!(
        "rotation  {} months; current epoch {epoch}, next {next} (starts {})",
        cfg.rotation.get(),
        rfc3339_utc(next.start_unix())
    );
    let current = keyring.current_version();
    match current {
        Some(v) => println!("current   r{v} (data key {})", Kid::new(v, epoch)),
        None => println!("current   none (no active root)"),
    }
    println!("roots");
    let mut failed = Vec::new();
    for r in &keyring.roots {
        let result = match &provider {
            _ if r.state == RootState::Destroyed => "tombstone (never reused)".to_string(),
            Ok(p) => match r.unwrap(p.as_ref()).await {
                Ok(_) => "unwrap ok, check value ok".to_string(),
                Err(m) => {
                    if r.state == RootState::Active {
                        failed.push(format!("r{}", r.version));
                    }
                    format!("FAILED: {m}")
                }
            },
            Err(_) => {
                if r.state == RootState::Active {
                    failed.push(format!("r{}", r.version));
                }
                "not checked (provider unavailable)".to_string()
            }
        };
        println!(
            "  r{:<4} {:<9} created {}  kek {} {}  {}{}",
            r.version,
            r.state,
            r.created_at,
            r.kek.provider,
            r.kek.key_id,
            result,
            if Some(r.version) == current {
                "  [current]"
            } else {
                ""
            }
        );
    }
    let current_key = keyring.current_relay_key();
    if keyring.relay_keys.is_empty() {
        println!("relay keys none (`keyring rotate-relay-key` creates the first)");
    } else {
        println!("relay keys");
    }
    for k in &keyring.relay_keys {
        let result = match &provider {
            _ if k.state == RootState::Destroyed => "tombstone (never reused)".to_string(),
            Ok(p) => match k.unwrap_seed(p.as_ref()).await {
                Ok(_) => "unwrap ok, key configuration ok".to_string(),
                Err(m) => {
                    if k.state == RootState::Active {
                        failed.push(format!("k{}", k.id));
                    }
                    format!("FAILED: {m}")
                }
            },
            Err(_) => {
                if k.state == RootState::Active {
                    failed.push(format!("k{}", k.id));
                }
                "not checked (provider unavailable)".to_string()
            }
        };
        println!(
            "  k{:<4} {:<9} created {}  kek {} {}  {}{}",
            k.id,
            k.state,
            k.created_at,
            k.kek.provider,
            k.kek.key_id,
            result,
            if Some(k.id) == current_key {
                "  [current]"
            } else {
                ""
            }
        );
    }
    if let Err(e) = provider {
        return Err(e.into());
    }
    if current.is_none() {
        return Err(Failure(format!(
            "keyring {}: no active root",
            path.display()
        )));
    }
    if !failed.is_empty() {
        return Err(Failure(format!(
            "keyring {}: active root(s) or relay key(s) {} failed to unwrap or verify",
            path.display(),
            failed.join(", ")
        )));
    }
    Ok(())
}

/// The provider, the roots unwrapped, and the digest of the keyring file they came from.
type Loaded = (Arc<dyn KeyProvider>, Roots, KeyringDigest);

/// Opens the provider and unwraps every active root.
async fn load_roots(cfg: &KeyringConfig) -> Result<Loaded, (bool, Failure)> {
    let (keyring, digest) = Keyring::read(&cfg.keyring).map_err(|e| (false, e.into()))?;
    let provider: Arc<dyn KeyProvider> = provider::open(cfg)
        .await
        .map_err(|e| (e.is_transient(), e.into()))?
        .into();
    match Roots::unwrap_all(&keyring, provider.as_ref(), Path::new(&cfg.keyring)).await {
        Ok(roots) => Ok((provider, roots, digest)),
        Err(e) => {
            // A provider outage is worth retrying; a wrong KEK or a tampered root is not.
            let transient = matches!(&e, KeyringError::Root { message, .. }
                | KeyringError::RelayKey { message, .. }
                if message.starts_with("provider unavailable"));
            Err((transient, e.into()))
        }
    }
}

/// First retry after this long, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

fn log_loaded(cfg: &KeyringConfig, provider: &dyn KeyProvider, roots: &Roots) {
    tracing::info!(
        keyring = %cfg.keyring.display(),
        provider = %provider.kind(),
        key_id = provider.key_id(),
        root_versions = ?roots.versions(),
        current_root = roots.current(),
        relay_key_ids = ?roots.relay_key_ids(),
        rotation_months = cfg.rotation.get(),
        "keyring loaded; every active root unwrapped and matched its check value"
    );
    if roots.current_relay_key().is_none() {
        tracing::warn!(
            keyring = %cfg.keyring.display(),
            "the keyring has no relay server key: relay pairing (protocol v2) is refused until \
             `veil-keyservice keyring rotate-relay-key` creates one"
        );
    }
}

/// `serve`: load and verify every active root, bind, serve until SIGTERM/SIGINT. If the
/// provider is unreachable at start, serve not-ready (`/readyz` 503) and retry with backoff;
/// any other failure refuses to start.
pub async fn serve(cfg: &KeyringConfig, scfg: ServeConfig) -> Result<(), Failure> {
    // The keyring first: a missing one is the error to report (with the `init` hint).
    let first = match load_roots(cfg).await {
        Err((false, e)) => return Err(e),
        r => r,
    };
    let relay = crate::relay::Relay::start(scfg.relay.clone())
        .await
        .map_err(Failure)?;
    let (state, pending) = match first {
        Ok((provider, roots, digest)) => {
            warn_local(provider.as_ref(), true);
            log_loaded(cfg, provider.as_ref(), &roots);
            let st = AppState::new(roots, cfg.rotation, scfg.token).with_relay(relay);
            let _ = st.reloader.set(server::Reloader::new(
                cfg.keyring.clone(),
                provider,
                Some(digest),
            ));
            (Arc::new(st), false)
        }
        Err((false, e)) => return Err(e),
        Err((true, e)) => {
            tracing::error!(
                error = %e.0,
                "the key provider is unreachable; serving not-ready and retrying with backoff"
            );
            let st = AppState::new(
                Roots::from_map(Default::default()),
                cfg.rotation,
                scfg.token,
            )
            .with_relay(relay);
            (Arc::new(st), true)
        }
    };
    let listener = tokio::net::TcpListener::bind(scfg.listen)
        .await
        .map_err(|e| {
            Failure(format!(
                "{ENV_LISTEN} {}: cannot bind: {}",
                scfg.listen,
                crate::config::io_reason(&e)
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure(format!("{ENV_LISTEN}: {e}")))?;
    if pending {
        let state = state.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let mut wait = RETRY_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                match load_roots(&cfg).await {
                    Ok((provider, roots, digest)) => {
                        warn_local(provider.as_ref(), true);
                        log_loaded(&cfg, provider.as_ref(), &roots);
                        state.set_roots(roots);
                        let _ = state.reloader.set(server::Reloader::new(
                            cfg.keyring.clone(),
                            provider,
                            Some(digest),
                        ));
                        state.set_ready(true);
                        tracing::info!(target: ANNOUNCE_TARGET, "veil-keyservice ready");
                        return;
                    }
                    Err((_, e)) => {
                        wait = (wait * 2).min(RETRY_MAX);
                        tracing::error!(
                            error = %e.0,
                            retry_in_secs = wait.as_secs(),
                            "the keyring's roots are still not unwrapped; not ready"
                        );
                    }
                }
            }
        });
    } else {
        state.set_ready(true);
    }
    if let Some(every) = scfg.keyring_reload {
        // The keyring is read live: a rotated root in a mounted Secret (the kubelet swaps
        // its `..data` symlink) is held here within `every`, without a restart.
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                state.reload_if_changed().await;
            }
        });
    }
    tracing::info!(target: ANNOUNCE_TARGET, %addr, "veil-keyservice listening on {addr}");
    server::serve(listener, state, server::shutdown_signal())
        .await
        .map_err(|e| Failure(format!("server error: {e}")))?;
    tracing::info!(target: ANNOUNCE_TARGET, "veil-keyservice stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_shape() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["veil-keyservice"]).unwrap();
        assert!(c.command.is_none());
        let c =
            Cli::try_parse_from(["veil-keyservice", "keyring", "init", "--keyring", "k"]).unwrap();
        assert!(matches!(
            c.command,
            Some(Command::Keyring(KeyringCommand::Init))
        ));
        assert_eq!(c.keyring, Some(PathBuf::from("k")));
        let c =
            Cli::try_parse_from(["veil-keyservice", "serve", "--listen", "127.0.0.1:1"]).unwrap();
        assert!(matches!(c.command, Some(Command::Serve(_))));
        assert!(Cli::try_parse_from(["veil-keyservice", "keyring", "rotate"]).is_err());
        let c =
            Cli::try_parse_from(["veil-keyservice", "keyring", "destroy", "r2", "--yes"]).unwrap();
        assert!(matches!(
            c.command,
            Some(Command::Keyring(KeyringCommand::Destroy { yes: true, .. }))
        ));
        assert!(Cli::try_parse_from(["veil-keyservice", "keyring", "rewrap"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["veil-keyservice", "check"])
                .unwrap()
                .command,
            Some(Command::Check)
        ));
    }

    #[test]
    fn serve_flags_rejected_on_keyring_commands() {
        let cli = Cli::try_parse_from([
            "veil-keyservice",
            "--listen",
            "127.0.0.1:1",
            "keyring",
            "status",
        ])
        .unwrap();
        let vars = std::collections::HashMap::<&str, &str>::new();
        assert!(run(cli, &vars).unwrap_err().0.contains("serve` only"));
    }
}
