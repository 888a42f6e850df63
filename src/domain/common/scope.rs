//! API-key scopes: what a key may do, one scope per kind of org route (the access table in `policy.rs`
//! names the scope of each route; a route without one never accepts a key). A write scope also grants
//! the read scope of the same resource, and `agents:admin` grants `agents:read`.

use super::access::Role;

crate::text_enum! {
    /// One permission of an API key, as written in requests and stored in `api_keys.scopes`.
    pub enum Scope {
        OrgRead = "org:read",
        OrgWrite = "org:write",
        WorkflowsRead = "workflows:read",
        WorkflowsWrite = "workflows:write",
        RunsRead = "runs:read",
        RunsWrite = "runs:write",
        SecretsRead = "secrets:read",
        SecretsWrite = "secrets:write",
        AgentsRead = "agents:read",
        AgentsAdmin = "agents:admin",
        /// The org's LLM usage report (owner/admin).
        UsageRead = "usage:read",
        SessionsRead = "sessions:read",
        SessionsWrite = "sessions:write",
    }
}

impl Scope {
    /// The broader scope that also grants this one.
    const fn granted_by(self) -> Option<Scope> {
        match self {
            Scope::OrgRead => Some(Scope::OrgWrite),
            Scope::WorkflowsRead => Some(Scope::WorkflowsWrite),
            Scope::RunsRead => Some(Scope::RunsWrite),
            Scope::SecretsRead => Some(Scope::SecretsWrite),
            Scope::AgentsRead => Some(Scope::AgentsAdmin),
            Scope::SessionsRead => Some(Scope::SessionsWrite),
            _ => None,
        }
    }

    /// The least org role the routes of this scope need (the access table's role for them).
    pub const fn role(self) -> Role {
        match self {
            Scope::OrgRead
            | Scope::WorkflowsRead
            | Scope::RunsRead
            | Scope::RunsWrite
            | Scope::SessionsRead
            | Scope::SessionsWrite => Role::Member,
            _ => Role::Admin,
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u16);

impl Scopes {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn insert(&mut self, s: Scope) {
        self.0 |= s.bit();
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    /// Whether a key holding these scopes may call a route that requires `required`.
    pub fn grants(self, required: Scope) -> bool {
        self.contains(required) || required.granted_by().is_some_and(|b| self.contains(b))
    }

    /// The role these scopes call for: the highest role any of them needs (member when empty).
    pub fn role(self) -> Role {
        self.iter()
            .map(Scope::role)
            .fold(Role::Member, |a, b| if b.at_least(a) { b } else { a })
    }

    /// The scopes in their canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .iter()
            .copied()
            .filter(move |s| self.contains(*s))
    }

    /// The set named by `names`; unknown names are skipped (a scope retired from the code grants nothing).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Scope::parse).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut out = Scopes::default();
        for s in iter {
            out.insert(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_grants_read_and_not_the_other_way() {
        let w: Scopes = [Scope::WorkflowsWrite].into_iter().collect();
        assert!(w.grants(Scope::WorkflowsRead) && w.grants(Scope::WorkflowsWrite));
        let r: Scopes = [Scope::WorkflowsRead].into_iter().collect();
        assert!(r.grants(Scope::WorkflowsRead) && !r.grants(Scope::WorkflowsWrite));
        assert!(!r.grants(Scope::RunsRead));
        let a: Scopes = [Scope::AgentsAdmin].into_iter().collect();
        assert!(a.grants(Scope::AgentsRead));
    }

    #[test]
    fn role_is_the_highest_needed() {
        let member: Scopes = [Scope::RunsWrite, Scope::OrgRead].into_iter().collect();
        assert_eq!(member.role(), Role::Member);
        let admin: Scopes = [Scope::RunsRead, Scope::SecretsRead].into_iter().collect();
        assert_eq!(admin.role(), Role::Admin);
        assert_eq!(Scopes::default().role(), Role::Member);
    }

    #[test]
    fn every_scope_has_its_own_bit_and_round_trips() {
        let all: Scopes = Scope::ALL.iter().copied().collect();
        assert_eq!(all.iter().count(), Scope::ALL.len());
        let names: Vec<&str> = all.iter().map(Scope::as_str).collect();
        assert_eq!(Scopes::from_names(names.iter().copied()), all);
        assert_eq!(Scopes::from_names(["nope:read"]), Scopes::default());
    }
}
