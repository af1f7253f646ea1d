//! Network partitions on loopback: firewall rules (`iptables`, as root)
//! that drop one process's packets to one port, or everything between two
//! ports, until they are lifted.
//!
//! Every process here talks over 127.0.0.1, so addresses cannot tell a
//! partition's sides apart. Processes can: tokend replicas and resource
//! servers run with group ids of their own ([`Groups`]; the uid stays
//! root, so they read their files as before), and a rule matching the
//! group (`-m owner --gid-owner`) drops that process's packets alone.
//! Packets already in flight and connections already open are cut as well
//! (the rule sees every packet), as in a real partition; lifting the rule
//! lets TCP's retransmissions resume them.

use std::process::Command;
use std::sync::Mutex;

/// Group ids for the processes of one run: tokend replica `j` has
/// `tokend(j)`, resource server `k` has `resource_server(k)`. Drawn from
/// this process's id so concurrent runs do not cut each other.
#[derive(Debug, Clone, Copy)]
pub struct Groups {
    base: u32,
}

impl Groups {
    /// The groups of this run.
    pub fn of_this_run() -> Groups {
        Groups {
            base: 40_000 + (std::process::id() % 5_000) * 4,
        }
    }

    /// The group of tokend replica `j` (of two).
    pub fn tokend(self, j: usize) -> u32 {
        self.base + u32::try_from(j % 2).unwrap_or(0)
    }

    /// The group of resource server `k` (of two).
    pub fn resource_server(self, k: usize) -> u32 {
        self.base + 2 + u32::try_from(k % 2).unwrap_or(0)
    }
}

/// What a rule drops (on the loopback interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Every packet a process of group `gid` sends to `port`: it can no
    /// longer reach that listener (its answers to the process are dropped
    /// with it, since TCP needs both ways).
    Group {
        /// The cut-off process's group.
        gid: u32,
        /// The port it can no longer reach.
        port: u16,
    },
    /// Every packet between two ports, both ways: one connection (e.g. a
    /// replica's replication link, from its port to the primary's).
    Link {
        /// One end.
        from: u16,
        /// The other.
        to: u16,
    },
}

impl Cut {
    /// The `iptables` rule specifications (after the chain) it takes.
    fn rules(&self) -> Vec<Vec<String>> {
        let base = |extra: &[String]| {
            let mut rule: Vec<String> = ["-o", "lo", "-p", "tcp"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            rule.extend_from_slice(extra);
            rule.extend(["-j".to_owned(), "DROP".to_owned()]);
            rule
        };
        match self {
            Cut::Group { gid, port } => vec![base(&[
                "--dport".into(),
                port.to_string(),
                "-m".into(),
                "owner".into(),
                "--gid-owner".into(),
                gid.to_string(),
            ])],
            Cut::Link { from, to } => vec![
                base(&[
                    "--sport".into(),
                    from.to_string(),
                    "--dport".into(),
                    to.to_string(),
                ]),
                base(&[
                    "--sport".into(),
                    to.to_string(),
                    "--dport".into(),
                    from.to_string(),
                ]),
            ],
        }
    }
}

/// The firewall of a run: the cuts in force, all lifted when it is
/// dropped (a run that panics leaves no rule behind).
#[derive(Debug)]
pub struct Firewall {
    available: bool,
    active: Mutex<Vec<Cut>>,
}

impl Firewall {
    /// The machine's firewall, if this process may change it (root, with
    /// `iptables` installed).
    pub fn open() -> Firewall {
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[allow(unsafe_code)] // the SAFETY note above
        let root = unsafe { libc::geteuid() } == 0;
        let available = root
            && Command::new("iptables")
                .args(["-w", "-n", "-L", "OUTPUT"])
                .output()
                .is_ok_and(|o| o.status.success());
        Firewall {
            available,
            active: Mutex::new(Vec::new()),
        }
    }

    /// Whether partitions can be made here; without it the nemesis does
    /// not draw them (and says so in the history).
    pub fn available(&self) -> bool {
        self.available
    }

    /// Puts `cut` in force; false if the firewall refused it.
    pub fn cut(&self, cut: Cut) -> bool {
        if !self.available {
            return false;
        }
        let mut applied = Vec::new();
        for rule in cut.rules() {
            if iptables("-I", &rule) {
                applied.push(rule);
            } else {
                for rule in applied {
                    iptables("-D", &rule);
                }
                return false;
            }
        }
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(cut);
        true
    }

    /// Lifts `cut`.
    pub fn lift(&self, cut: &Cut) {
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = active.iter().position(|c| c == cut) {
            for rule in active.remove(i).rules() {
                iptables("-D", &rule);
            }
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let active = std::mem::take(
            self.active
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for cut in active {
            for rule in cut.rules() {
                iptables("-D", &rule);
            }
        }
    }
}

/// Runs `iptables -w ACTION OUTPUT RULE...`; whether it worked.
fn iptables(action: &str, rule: &[String]) -> bool {
    Command::new("iptables")
        .args(["-w", action, "OUTPUT"])
        .args(rule)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_cut_both_ways_and_a_group_at_its_port() {
        let link = Cut::Link { from: 1, to: 2 }.rules();
        assert_eq!(link.len(), 2);
        assert!(link[0].windows(2).any(|w| w == ["--sport", "1"]));
        assert!(link[1].windows(2).any(|w| w == ["--sport", "2"]));
        let group = Cut::Group { gid: 7, port: 9 }.rules();
        assert!(group[0].windows(2).any(|w| w == ["--gid-owner", "7"]));
        assert!(group[0].windows(2).any(|w| w == ["--dport", "9"]));
        assert!(
            group
                .iter()
                .all(|r| r.ends_with(&["-j".into(), "DROP".into()]))
        );
    }

    #[test]
    fn groups_of_a_run_are_distinct() {
        let g = Groups::of_this_run();
        let all = [
            g.tokend(0),
            g.tokend(1),
            g.resource_server(0),
            g.resource_server(1),
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| a != b));
        }
    }
}
