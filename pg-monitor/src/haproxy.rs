//! Telling the local haproxy at once what its checks would find a moment
//! later: which node is primary now. The monitor does it when it promotes
//! its node, the switchover when it hands the role over; haproxy's checks go
//! on and keep the truth from then on. The other node's haproxy learns it
//! from its own checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the local haproxy's admin socket is, and how it names the nodes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct HaproxyFlags {
    /// haproxy's admin socket on this node, told the new primary at once.
    /// A path where no socket exists is skipped (no haproxy on this node).
    #[arg(long, value_name = "PATH", requires_all = ["haproxy_server", "haproxy_peer_server"])]
    pub haproxy_socket: Option<PathBuf>,

    /// This node's server name in haproxy's backends, e.g. node0.
    #[arg(long, value_name = "NAME", requires = "haproxy_socket")]
    pub haproxy_server: Option<String>,

    /// The peer's server name in haproxy's backends, e.g. node1.
    #[arg(long, value_name = "NAME", requires = "haproxy_socket")]
    pub haproxy_peer_server: Option<String>,

    /// haproxy's write backend.
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub haproxy_backend: String,

    /// haproxy's read-only backend.
    #[arg(long, value_name = "NAME", default_value = "readonly")]
    pub haproxy_readonly_backend: String,
}

/// Which node a change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Peer,
}

/// Bound on each runtime command.
const HAPROXY_TIMEOUT: Duration = Duration::from_secs(2);

impl HaproxyFlags {
    /// The server's name in the write and the read-only backend.
    fn server(&self, side: Side) -> Option<&str> {
        match side {
            Side::Local => self.haproxy_server.as_deref(),
            Side::Peer => self.haproxy_peer_server.as_deref(),
        }
    }

    /// The health changes for `side` stopping: its write server down, so
    /// that new connections fail over at once instead of waiting out
    /// haproxy's turn-around before a retry on a server that refuses them.
    pub fn stopping(&self, side: Side) -> Vec<(String, &'static str)> {
        self.server(side)
            .map(|server| vec![(format!("{}/{server}", self.haproxy_backend), "down")])
            .unwrap_or_default()
    }

    /// The health changes for `side` just promoted: it takes writes and
    /// serves no reads as a replica; the other node takes no writes.
    pub fn promoted(&self, side: Side) -> Vec<(String, &'static str)> {
        let other = match side {
            Side::Local => Side::Peer,
            Side::Peer => Side::Local,
        };
        let (Some(primary), Some(other)) = (self.server(side), self.server(other)) else {
            return Vec::new();
        };
        vec![
            (format!("{}/{primary}", self.haproxy_backend), "up"),
            (format!("{}/{other}", self.haproxy_backend), "down"),
            (
                format!("{}/{primary}", self.haproxy_readonly_backend),
                "down",
            ),
        ]
    }

    /// Tells the local haproxy `health`; `None` when no socket is configured,
    /// else one line: what haproxy said to each command or why it could not
    /// be asked. Never fails the caller: the checks catch up anyway.
    pub fn tell(&self, health: &[(String, &'static str)]) -> Option<String> {
        let socket = self.haproxy_socket.as_deref()?;
        Some(format!(
            "haproxy: {}",
            tell_haproxy(socket, health).join(", ")
        ))
    }
}

/// One line per command, what haproxy said or why it could not be asked.
fn tell_haproxy(socket: &Path, health: &[(String, &'static str)]) -> Vec<String> {
    if !socket.exists() {
        return vec![format!(
            "no haproxy socket at {}: its checks will find the new primary",
            socket.display()
        )];
    }
    health
        .iter()
        .map(|(server, health)| {
            let command = format!("set server {server} health {health}");
            match pgcore::haproxy::ask(socket, &command, HAPROXY_TIMEOUT) {
                Ok(answer) if answer.trim().is_empty() => format!("{server} {health}"),
                Ok(answer) => format!("{server} not set {health}: haproxy says {}", answer.trim()),
                Err(err) => format!("{server} not set {health}: cannot ask haproxy: {err}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> HaproxyFlags {
        HaproxyFlags {
            haproxy_socket: Some("/run/haproxy.sock".into()),
            haproxy_server: Some("node0".into()),
            haproxy_peer_server: Some("node1".into()),
            haproxy_backend: "postgres".into(),
            haproxy_readonly_backend: "readonly".into(),
        }
    }

    #[test]
    fn a_promotion_puts_the_new_primary_up_for_writes_and_down_for_reads() {
        let pairs = |changes: Vec<(String, &str)>| {
            changes
                .iter()
                .map(|(server, health)| format!("{server} {health}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(flags().promoted(Side::Local)),
            [
                "postgres/node0 up",
                "postgres/node1 down",
                "readonly/node0 down"
            ]
        );
        assert_eq!(
            pairs(flags().promoted(Side::Peer)),
            [
                "postgres/node1 up",
                "postgres/node0 down",
                "readonly/node1 down"
            ]
        );
        assert_eq!(
            pairs(flags().stopping(Side::Local)),
            ["postgres/node0 down"]
        );
        assert!(HaproxyFlags::default().promoted(Side::Local).is_empty());
        assert_eq!(HaproxyFlags::default().tell(&[]), None);
    }
}
