//! The routes the api role registers, read from the sources that register them: actix cannot list its
//! routes, so the registrations (`.route("<path>", web::<method>()…)`) are parsed from `src/roles/api.rs`
//! and every `src/domain/**/routes.rs` (but the gateway's, served on its own listener). A registration the
//! parser cannot read (`web::resource`, `web::scope`, `.service`, a method builder outside `.route`) fails
//! loudly instead of going unseen.

/// One registration: method (upper case), path template as registered, and the file that makes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Registered {
    pub method: String,
    pub path: String,
    pub file: String,
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn sources() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut sources = vec![format!("{root}/src/roles/api.rs")];
    let mut dirs = vec![format!("{root}/src/domain")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = path.to_string_lossy().to_string();
            if path.is_dir() {
                dirs.push(name);
            } else if path.file_name().is_some_and(|n| n == "routes.rs")
                // The gateway's routes are served on its own listener, authenticated by executor token.
                && !name.contains("/domain/gateway/")
                // The OAuth routes are compiled (and registered) only with the `oidc` feature.
                && (cfg!(feature = "oidc") || !name.contains("/auth/oauth/"))
            {
                sources.push(name);
            }
        }
    }
    sources.sort();
    sources
}

/// Every route the api role registers.
pub fn api_routes() -> Vec<Registered> {
    let mut found = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).expect("read source");
        for other in ["web::resource(", "web::scope(", ".service("] {
            assert!(
                !text.contains(other),
                "{file} registers routes with `{other}`, which tests/it/common/routes.rs cannot read: \
                 register with `.route(\"<path>\", web::<method>().to(…))` or teach the parser"
            );
        }
        let builders: usize = METHODS
            .iter()
            .map(|m| text.matches(&format!("web::{m}()")).count())
            .sum();
        let before = found.len();
        // `.route(` then the path literal, then `web::<method>()`, across line breaks.
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            let after = &rest[open + 1..];
            let Some(close) = after.find('"') else { break };
            let path = &after[..close];
            let tail = &after[close + 1..];
            let Some(m) = tail.find("web::") else { break };
            let method: String = tail[m + "web::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            found.push(Registered {
                method: method.to_uppercase(),
                path: path.to_string(),
                file: file.clone(),
            });
        }
        assert_eq!(
            found.len() - before,
            builders,
            "{file}: {builders} method builders (`web::get()`, …) but {} `.route(\"…\", web::…)` \
             registrations were read: a route is registered in a way the parser cannot see",
            found.len() - before
        );
    }
    found.sort();
    found
}
