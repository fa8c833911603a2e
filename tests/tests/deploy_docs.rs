//! The deployment docs stay true to the project: the migration table names every setting of
//! the seed appliances and every option of the moesif profile, and every repository path
//! the deployment guides mention exists.

use std::fs;

use veil_e2e::repo_root;

fn doc(name: &str) -> String {
    fs::read_to_string(repo_root().join("docs").join(name))
        .unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

/// The table rows of docs/migrating.md (lines starting with `|`).
fn migrating_rows() -> String {
    doc("migrating.md")
        .lines()
        .filter(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn migrating_names_every_seed_variable() {
    let rows = migrating_rows();
    let seeds = [
        // Moesif Secure Proxy.
        "KMS_PROVIDER",
        "AWS_CUSTOMER_KEY_ID",
        "AWS_KMS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURE_PROXY_ROLE_ARN",
        "AZURE_VAULT_URL",
        "AZURE_KEY_NAME",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "ENCRYPTION_ROTATION_MONTHS",
        "MOESIF_ENCRYPTION_ROTATION_MONTHS",
        "MOESIF_APPLICATION_ID",
        "MOESIF_MANAGEMENT_API_KEY",
        // Eclypses MTE Relay.
        "UPSTREAM",
        "CORS_ORIGINS",
        "CLIENT_ID_SECRET",
        "REDIS_URL",
        "PORT",
        "DEBUG",
        "PASS_THROUGH_ROUTES",
        "MTE_ROUTES",
        "CORS_METHODS",
        "HEADERS",
        "MAX_POOL_SIZE",
    ];
    for name in seeds {
        assert!(
            rows.contains(&format!("`{name}`")),
            "docs/migrating.md has no row for {name}"
        );
    }
}

/// Every option of the moesif profile (docs/configuration.md's table) has its row, so a new
/// option cannot be added without saying where the seed's equivalent went.
#[test]
fn migrating_names_every_moesif_profile_option() {
    let config = doc("configuration.md");
    let start = config
        .find("### `moesif` profile options")
        .expect("configuration.md has the moesif options table");
    let section = &config[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let options: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(options.len() >= 15, "parsed {options:?}");
    let rows = migrating_rows();
    for o in options {
        assert!(
            rows.contains(&format!("`{o}`")) || rows.contains(&format!(".{o}`")),
            "docs/migrating.md has no row naming the moesif option {o}"
        );
    }
}

#[test]
fn deployment_guides_name_only_paths_that_exist() {
    let mut checked = 0;
    for name in [
        "deploy-envoy.md",
        "deploy-istio.md",
        "deploy-compose.md",
        "migrating.md",
    ] {
        let text = doc(name);
        for (i, _) in text.match_indices('`') {
            let rest = &text[i + 1..];
            let Some(end) = rest.find('`') else { break };
            let token = &rest[..end];
            let is_path = [
                "envoy/", "istio/", "docker/", "compose/", "tests/", "scripts/", "docs/",
            ]
            .iter()
            .any(|p| token.starts_with(p))
                && !token.contains(' ')
                && !token.contains('*');
            if is_path {
                let path = token.trim_end_matches(['/', '.', ',']);
                // A path per shell (`docker/envoy-<shell>.Dockerfile`, or as compose
                // interpolates it): each shell's must exist.
                for shell in ["wasm", "native"] {
                    let path = path
                        .replace("<shell>", shell)
                        .replace("${VEIL_FILTER:-wasm}", shell);
                    assert!(
                        repo_root().join(&path).exists(),
                        "docs/{name} names {token}, which does not exist ({path})"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} paths checked");
}
