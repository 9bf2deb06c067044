//! Where a destination domain's mail goes next: `remote.routes[domain]` first, then
//! `remote.smarthost`, else the domain's MX hosts (mx.rs). A pure decision on the
//! validated config; resolving names into addresses happens in mx.rs.

use sloop_common::config::{HostPort, RemoteConfig};

/// The next hop for one destination domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// A fixed host (from `remote.routes` or `remote.smarthost`): no MX lookup.
    Relay {
        host: HostPort,
        source: &'static str,
    },
    /// Look up the domain's MX records.
    Mx { domain: String },
}

/// Decides the next hop for `domain` (compared case-insensitively).
pub fn next_hop(cfg: &RemoteConfig, domain: &str) -> NextHop {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(host) = cfg.routes.get(&domain) {
        return NextHop::Relay {
            host: host.clone(),
            source: "route",
        };
    }
    if let Some(host) = &cfg.smarthost {
        return NextHop::Relay {
            host: host.clone(),
            source: "smarthost",
        };
    }
    NextHop::Mx { domain }
}

/// The domain part of an address (after the last `@`), lower case; empty when none.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn cfg(smarthost: Option<HostPort>) -> RemoteConfig {
        let mut routes = BTreeMap::new();
        routes.insert(
            "example.net".to_string(),
            HostPort {
                host: "127.0.0.1".into(),
                port: 2526,
            },
        );
        RemoteConfig {
            smarthost,
            routes,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            data_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn routes_then_smarthost_then_mx() {
        let smart = HostPort {
            host: "relay.test".into(),
            port: 587,
        };
        let c = cfg(Some(smart.clone()));
        assert!(matches!(
            next_hop(&c, "Example.NET."),
            NextHop::Relay { source: "route", ref host } if host.port == 2526
        ));
        assert_eq!(
            next_hop(&c, "other.test"),
            NextHop::Relay {
                host: smart,
                source: "smarthost"
            }
        );
        assert_eq!(
            next_hop(&cfg(None), "Other.Test"),
            NextHop::Mx {
                domain: "other.test".into()
            }
        );
    }

    #[test]
    fn domains_of_addresses() {
        assert_eq!(domain_of("a@B.test"), "b.test");
        assert_eq!(domain_of("\"x@y\"@c.test"), "c.test");
        assert_eq!(domain_of("postmaster"), "");
    }
}
