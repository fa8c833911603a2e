//! Relay route globs (`relay.routes`, `relay.pass_through_routes`): `*` matches any run of
//! characters, `/` included; everything else is literal. Matched against the path without
//! its query. A path with dot segments or encoded slashes/dots matches no glob, so an
//! upstream that normalizes paths cannot be steered outside the allowed routes.

/// One glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGlob {
    pattern: String,
}

impl RouteGlob {
    /// A glob; it must start with `/` and hold no `?` or `#`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err("must start with '/'".into());
        }
        if s.contains(['?', '#']) {
            return Err("must be a path without '?' or '#'".into());
        }
        Ok(RouteGlob {
            pattern: s.to_string(),
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `path` (no query) matches the whole glob.
    pub fn matches(&self, path: &str) -> bool {
        if !is_plain_path(path) {
            return false;
        }
        let mut pieces = self.pattern.split('*');
        let Some(first) = pieces.next() else {
            return false;
        };
        let Some(mut rest) = path.strip_prefix(first) else {
            return false;
        };
        let mut middle: Vec<&str> = pieces.collect();
        let Some(last) = middle.pop() else {
            // no '*': the path must be exactly the glob
            return rest.is_empty();
        };
        for piece in middle {
            match rest.find(piece) {
                Some(at) => rest = rest.get(at + piece.len()..).unwrap_or_default(),
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

/// A path that starts with `/`, has no `.`/`..` segment, no backslash and no
/// percent-encoded `/`, `\` or `.`.
pub fn is_plain_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    !(lower.contains("%2f") || lower.contains("%5c") || lower.contains("%2e"))
}

/// Whether any glob of `globs` matches `path`.
pub fn any_match(globs: &[RouteGlob], path: &str) -> bool {
    globs.iter().any(|g| g.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        RouteGlob::parse(glob).unwrap().matches(path)
    }

    #[test]
    fn literal_and_star() {
        assert!(m("/app/echo", "/app/echo"));
        assert!(!m("/app/echo", "/app/echo/"));
        assert!(!m("/app/echo", "/app/ech"));
        assert!(m("/app/*", "/app/"));
        assert!(m("/app/*", "/app/a/b/c"));
        assert!(!m("/app/*", "/app"));
        assert!(!m("/app/*", "/application"));
        assert!(m("/app*", "/application"));
        assert!(m("/*", "/anything/at/all"));
        assert!(m("/*", "/"));
    }

    #[test]
    fn stars_in_the_middle() {
        assert!(m("/users/*/orders", "/users/42/orders"));
        assert!(m("/users/*/orders", "/users/a/b/orders"));
        assert!(!m("/users/*/orders", "/users/42/orders/1"));
        assert!(m("/users/*/orders*", "/users/42/orders/1"));
        assert!(m("/a/*/b/*/c", "/a/x/b/y/c"));
        assert!(!m("/a/*/b/*/c", "/a/x/c/y/b"));
        // pieces must not overlap: "/ab" + "*" + "ba" on "/aba"
        assert!(!m("/ab*ba", "/aba"));
        assert!(m("/ab*ba", "/abba"));
        assert!(m("/x**y", "/xy"));
    }

    #[test]
    fn unnormalized_paths_match_nothing() {
        assert!(!m("/app/*", "/app/../admin"));
        assert!(!m("/app/*", "/app/./x"));
        assert!(!m("/app/*", "/app/%2e%2e/admin"));
        assert!(!m("/app/*", "/app/a%2Fb"));
        assert!(!m("/app/*", "/app\\x"));
        assert!(!m("/*", "no-slash"));
        assert!(m("/app/*", "/app/a..b/.c"));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(RouteGlob::parse("app/*"), Err("must start with '/'".into()));
        assert!(RouteGlob::parse("/a?b").is_err());
        assert!(RouteGlob::parse("/a#b").is_err());
        assert!(RouteGlob::parse("").is_err());
        let globs = [
            RouteGlob::parse("/a/*").unwrap(),
            RouteGlob::parse("/b").unwrap(),
        ];
        assert!(any_match(&globs, "/b"));
        assert!(any_match(&globs, "/a/1"));
        assert!(!any_match(&globs, "/c"));
        assert!(!any_match(&[], "/c"));
    }
}
