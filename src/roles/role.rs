//! The roles a process can run, and the `--role` value that names them.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Worker,
    Continuation,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Worker, Role::Continuation, Role::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Continuation => "continuation",
            Role::Gateway => "gateway",
        }
    }
}

/// A parsed `--role` value: `all` or a comma-separated subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(pub Vec<Role>);

impl FromStr for Roles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let add: &[Role] = match part {
                "all" => &Role::ALL,
                "api" => &[Role::Api],
                "worker" => &[Role::Worker],
                "continuation" => &[Role::Continuation],
                "gateway" => &[Role::Gateway],
                other => {
                    return Err(format!(
                        "unknown role `{other}` (expected all, api, worker, continuation, gateway)"
                    ))
                }
            };
            for r in add {
                if !roles.contains(r) {
                    roles.push(*r);
                }
            }
        }
        if roles.is_empty() {
            return Err("no role given".into());
        }
        Ok(Roles(roles))
    }
}
