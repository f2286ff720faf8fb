//! Each Gateway's own data-plane ports, so that every Gateway of ssegate's
//! class can have an address of its own (a Service per Gateway whose
//! target ports are these; see `conformance/TRIAGE.md`).
//!
//! The assignment is a pure function of the accepted Gateways and of the
//! slots their Services already point at: every replica computes the same
//! ports from the same objects without talking to the others. One slot of
//! two ports each (plain, then TLS). A Gateway keeps the slot its own
//! Service targets ([`PortClaim::held`]), so that deleting a Gateway or
//! adding one never moves another's ports, and neither does a Gateway
//! gaining or losing its HTTPS listeners (its TLS port is kept for it
//! either way). The others take the lowest free slots, oldest first
//! (creation time, then `namespace/name`): before any Service exists, or
//! when one was lost, the order alone decides, alike on every replica.

use super::ObjectKey;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The ports Gateways' own listeners are given (`--gateway-ports`,
/// `FIRST-LAST`, both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// Why a port range cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("{0:?} is not FIRST-LAST (two port numbers, e.g. 10000-10099)")]
    Syntax(String),
    #[error("port range {first}-{last} is empty or starts at port 0")]
    Empty { first: u16, last: u16 },
    #[error("port range {first}-{last} holds no slot of two ports (a Gateway needs a plain and a TLS port)")]
    TooSmall { first: u16, last: u16 },
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        if first == 0 || last < first {
            return Err(PortRangeError::Empty { first, last });
        }
        if last == first {
            return Err(PortRangeError::TooSmall { first, last });
        }
        Ok(PortRange { first, last })
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    /// How many Gateways the range serves: one per two ports.
    pub fn slots(&self) -> usize {
        // `last - first + 1` ports, halved (an odd last port is unused).
        usize::from(self.last - self.first).div_ceil(2)
    }

    /// The slot whose plain port is `port`, when the range holds it.
    fn slot_index(&self, port: u16) -> Option<usize> {
        let offset = port.checked_sub(self.first)?;
        let i = usize::from(offset / 2);
        (offset % 2 == 0 && i < self.slots()).then_some(i)
    }

    /// The ports of slot `i`, when the range holds it.
    fn slot(&self, i: usize, tls: bool) -> Option<AssignedPorts> {
        (i < self.slots()).then(|| {
            // In range: first + 2i + 1 <= last <= u16::MAX.
            let plain = self.first + 2 * i as u16;
            AssignedPorts {
                plain,
                tls: tls.then_some(plain + 1),
            }
        })
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || PortRangeError::Syntax(text.to_owned());
        let (a, b) = text.trim().split_once('-').ok_or_else(syntax)?;
        let first = a.trim().parse::<u16>().map_err(|_| syntax())?;
        let last = b.trim().parse::<u16>().map_err(|_| syntax())?;
        PortRange::new(first, last)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A listener served on a Gateway's own ports, as far as choosing among
/// a Gateway's listeners by host goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerHost {
    pub name: Arc<str>,
    /// `HTTPS` (served on the Gateway's TLS port).
    pub tls: bool,
    /// Lower-case; `None` matches every host.
    pub hostname: Option<String>,
}

impl ListenerHost {
    /// How well the listener's hostname matches `host` (lower-case, no
    /// port): an exact name beats the longest wildcard, which beats no
    /// hostname; `None` when it does not match. A wildcard `*.example.com`
    /// matches names with one or more labels before `.example.com`.
    fn fit(&self, host: &str) -> Option<(u8, usize)> {
        match self.hostname.as_deref() {
            None => Some((0, 0)),
            Some(name) if name == host => Some((2, name.len())),
            Some(name) => {
                let suffix = name.strip_prefix('*')?;
                (host.len() > suffix.len() && host.ends_with(suffix)).then_some((1, name.len()))
            }
        }
    }
}

/// An accepted Gateway of ssegate's class, as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClaim {
    pub gateway: ObjectKey,
    /// Creation time in Unix milliseconds (0 when unknown).
    pub created_millis: i64,
    /// It has HTTPS listeners, so its TLS port is served.
    pub tls: bool,
    /// The plain port its Service targets today, if it has one: the slot
    /// it keeps while that slot is in the range and no older Gateway
    /// holds it too.
    pub held: Option<u16>,
    /// Its listeners that take HTTPRoutes, in the Gateway's order.
    pub listeners: Vec<ListenerHost>,
}

/// One Gateway's own ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AssignedPorts {
    pub plain: u16,
    /// `None` when the Gateway has no HTTPS listener (the port stays
    /// reserved for it).
    pub tls: Option<u16>,
}

/// Every accepted Gateway's own ports. Empty when no range is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayPorts {
    /// `None`: the range was used up by older Gateways.
    by_gateway: BTreeMap<ObjectKey, Option<AssignedPorts>>,
    /// Each assigned port's Gateway (`namespace/name`, as rules' match
    /// conditions name it), for a lookup per request without allocating.
    by_port: BTreeMap<u16, Arc<str>>,
    /// The listeners of each Gateway that got ports, by `namespace/name`.
    listeners: BTreeMap<Arc<str>, Vec<ListenerHost>>,
}

impl GatewayPorts {
    /// Assigns `range`'s slots to the `claims`: first each claim the slot
    /// it holds (oldest first where two hold the same one), then the rest
    /// the lowest free slots, oldest first (creation time, then
    /// `namespace/name`); a claim finding no free slot gets none. No range:
    /// no Gateway has ports of its own. A Gateway claimed twice counts
    /// once.
    pub fn assign(range: Option<PortRange>, claims: &[PortClaim]) -> GatewayPorts {
        let Some(range) = range else {
            return GatewayPorts::default();
        };
        let mut ordered: Vec<&PortClaim> = claims.iter().collect();
        ordered.sort_by(|a, b| (a.created_millis, &a.gateway).cmp(&(b.created_millis, &b.gateway)));
        ordered.dedup_by(|a, b| a.gateway == b.gateway);
        let mut taken = vec![false; range.slots()];
        let mut slot_of: BTreeMap<&ObjectKey, usize> = BTreeMap::new();
        for claim in &ordered {
            let held = claim.held.and_then(|port| range.slot_index(port));
            if let Some(i) = held.filter(|i| !taken[*i]) {
                taken[i] = true;
                slot_of.insert(&claim.gateway, i);
            }
        }
        let mut free = (0..taken.len()).filter(|i| !taken[*i]);
        let mut by_gateway = BTreeMap::new();
        let mut by_port = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for claim in ordered {
            let index = slot_of.get(&claim.gateway).copied().or_else(|| free.next());
            let slot = index.and_then(|i| range.slot(i, claim.tls));
            if let Some(p) = slot {
                let name: Arc<str> = Arc::from(claim.gateway.to_string());
                listeners.insert(name.clone(), claim.listeners.clone());
                by_port.insert(p.plain, name.clone());
                if let Some(tls) = p.tls {
                    by_port.insert(tls, name);
                }
            }
            by_gateway.insert(claim.gateway.clone(), slot);
        }
        GatewayPorts {
            by_gateway,
            by_port,
            listeners,
        }
    }

    /// The listener of `gateway` (`namespace/name`) that a request for
    /// `host` (lower-case, no port) over TLS or not belongs to: the one
    /// whose hostname matches it most specifically (Gateway API's listener
    /// isolation); `None` when none matches.
    pub fn listener_for(&self, gateway: &str, tls: bool, host: &str) -> Option<&str> {
        let mut best: Option<(&ListenerHost, (u8, usize))> = None;
        for l in self.listeners.get(gateway)?.iter().filter(|l| l.tls == tls) {
            if let Some(fit) = l.fit(host) {
                if best.is_none_or(|(_, b)| fit > b) {
                    best = Some((l, fit));
                }
            }
        }
        best.map(|(l, _)| &*l.name)
    }

    /// The Gateway (`namespace/name`) a data-plane port is assigned to.
    pub fn gateway_at(&self, port: u16) -> Option<&str> {
        self.by_port.get(&port).map(|n| &**n)
    }

    /// A Gateway's ports; `None` when it has none (no range, not an
    /// accepted Gateway of ssegate's, or the range is used up).
    pub fn get(&self, gateway: &ObjectKey) -> Option<AssignedPorts> {
        self.by_gateway.get(gateway).copied().flatten()
    }

    /// The Gateways that got ports, by `namespace/name`.
    pub fn assigned(&self) -> impl Iterator<Item = (&ObjectKey, AssignedPorts)> {
        self.by_gateway.iter().filter_map(|(k, p)| Some((k, (*p)?)))
    }

    /// The Gateways left without ports because the range is used up, for
    /// their status.
    pub fn unassigned(&self) -> impl Iterator<Item = &ObjectKey> {
        self.by_gateway.iter().filter(|(_, p)| p.is_none()).map(|(k, _)| k)
    }

    /// Which Gateway serves on `port`, and whether it is its TLS port.
    pub fn owner_of(&self, port: u16) -> Option<(&ObjectKey, bool)> {
        self.assigned().find_map(|(k, p)| {
            if p.plain == port {
                Some((k, false))
            } else if p.tls == Some(port) {
                Some((k, true))
            } else {
                None
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_gateway.is_empty()
    }

    /// The listeners these ports need, as `(port, tls)`. A port's kind
    /// never changes (plain ports are a slot's first, TLS its second).
    pub fn listeners(&self) -> std::collections::BTreeSet<(u16, bool)> {
        self.assigned()
            .flat_map(|(_, p)| std::iter::once((p.plain, false)).chain(p.tls.map(|t| (t, true))))
            .collect()
    }

    /// What a replica does to its listeners when the table goes from
    /// `self` to `next`: bind `open`, close `close`. A port kept but given
    /// to another Gateway needs neither: a connection's Gateway is looked
    /// up in the current table on each request.
    pub fn changes_to(&self, next: &GatewayPorts) -> ListenerChanges {
        let (before, after) = (self.listeners(), next.listeners());
        ListenerChanges {
            open: after.difference(&before).copied().collect(),
            close: before.difference(&after).copied().collect(),
        }
    }
}

/// Listeners to bind and to close, as `(port, tls)`, each in port order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerChanges {
    pub open: Vec<(u16, bool)>,
    pub close: Vec<(u16, bool)>,
}

impl ListenerChanges {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.close.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, created: i64, tls: bool) -> PortClaim {
        PortClaim {
            gateway: ObjectKey::new("infra", name),
            created_millis: created,
            tls,
            held: None,
            listeners: Vec::new(),
        }
    }

    fn holding(name: &str, created: i64, port: u16) -> PortClaim {
        PortClaim {
            held: Some(port),
            ..claim(name, created, false)
        }
    }

    fn ports(p: &GatewayPorts, name: &str) -> Option<(u16, Option<u16>)> {
        p.get(&ObjectKey::new("infra", name)).map(|a| (a.plain, a.tls))
    }

    #[test]
    fn oldest_gateway_first_then_by_name_two_ports_each() {
        let range: PortRange = "10000-10005".parse().unwrap();
        assert_eq!(range.slots(), 3);
        // Given in no particular order; b and a are as old as each other.
        let p = GatewayPorts::assign(
            Some(range),
            &[claim("young", 9, true), claim("b", 5, false), claim("a", 5, true)],
        );
        assert_eq!(ports(&p, "a"), Some((10000, Some(10001))));
        assert_eq!(ports(&p, "b"), Some((10002, None)), "no HTTPS listener: no TLS port");
        assert_eq!(ports(&p, "young"), Some((10004, Some(10005))));
        assert_eq!(p.owner_of(10001), Some((&ObjectKey::new("infra", "a"), true)));
        assert_eq!(p.owner_of(10002), Some((&ObjectKey::new("infra", "b"), false)));
        assert_eq!(p.owner_of(10003), None, "b's reserved TLS port serves nothing");
        assert_eq!(p.gateway_at(10001), Some("infra/a"));
        assert_eq!(p.gateway_at(10004), Some("infra/young"));
        assert_eq!(p.gateway_at(10003), None);
        assert_eq!(p.unassigned().count(), 0);
    }

    #[test]
    fn a_new_gateway_or_an_older_ones_https_listener_moves_no_port() {
        let range = Some(PortRange::new(10000, 10099).unwrap());
        let before = GatewayPorts::assign(range, &[claim("g1", 1, false), claim("g2", 2, true)]);
        // A newer Gateway, one as old as g2 but named later, and g1 now with HTTPS.
        let after = GatewayPorts::assign(
            range,
            &[
                claim("g3", 3, false),
                claim("g2", 2, true),
                claim("g1", 1, true),
                claim("h", 2, false),
            ],
        );
        assert_eq!(ports(&before, "g1"), Some((10000, None)));
        assert_eq!(ports(&after, "g1"), Some((10000, Some(10001))));
        assert_eq!(ports(&before, "g2"), ports(&after, "g2"));
        assert_eq!(ports(&after, "h"), Some((10004, None)));
        assert_eq!(ports(&after, "g3"), Some((10006, None)));
    }

    #[test]
    fn gateways_beyond_the_range_get_none_and_no_range_gives_none() {
        // Five ports: two slots, the odd last port unused.
        let range = Some(PortRange::new(20000, 20004).unwrap());
        let claims = [claim("a", 1, true), claim("b", 2, true), claim("c", 3, true)];
        let p = GatewayPorts::assign(range, &claims);
        assert_eq!(ports(&p, "b"), Some((20002, Some(20003))));
        assert_eq!(ports(&p, "c"), None);
        assert_eq!(p.unassigned().collect::<Vec<_>>(), [&ObjectKey::new("infra", "c")]);
        assert_eq!(p.assigned().count(), 2);
        assert_eq!(p.owner_of(20004), None);

        let off = GatewayPorts::assign(None, &claims);
        assert!(off.is_empty());
        assert_eq!(ports(&off, "a"), None);
        assert_eq!(off.unassigned().count(), 0, "no range is not a used-up range");

        // The same Gateway claimed twice takes one slot.
        let p = GatewayPorts::assign(
            range,
            &[claim("a", 1, false), claim("a", 1, false), claim("b", 2, false)],
        );
        assert_eq!(ports(&p, "b"), Some((20002, None)));
    }

    #[test]
    fn a_gateway_keeps_the_slot_its_service_holds_so_deleting_another_moves_nothing() {
        let range = Some(PortRange::new(10000, 10007).unwrap());
        // a, b, c in order; then a is deleted: b and c keep their slots
        // (their Services hold them), and a new Gateway takes a's.
        let first = GatewayPorts::assign(
            range,
            &[claim("a", 1, false), claim("b", 2, false), claim("c", 3, false)],
        );
        assert_eq!(ports(&first, "c"), Some((10004, None)));
        let after = GatewayPorts::assign(
            range,
            &[holding("b", 2, 10002), holding("c", 3, 10004), claim("new", 4, true)],
        );
        assert_eq!(ports(&after, "b"), Some((10002, None)));
        assert_eq!(ports(&after, "c"), Some((10004, None)));
        assert_eq!(ports(&after, "new"), Some((10000, Some(10001))), "the lowest free slot");

        // Two Services hold one slot (a hand edit): the older Gateway keeps
        // it, the younger takes the lowest free one. A held port that is no
        // slot's plain port, or outside the range, holds nothing.
        let p = GatewayPorts::assign(
            range,
            &[
                holding("young", 5, 10002),
                holding("old", 1, 10002),
                holding("odd", 2, 10003),
                holding("far", 3, 20000),
            ],
        );
        assert_eq!(ports(&p, "old"), Some((10002, None)));
        assert_eq!(ports(&p, "odd"), Some((10000, None)));
        assert_eq!(ports(&p, "far"), Some((10004, None)));
        assert_eq!(ports(&p, "young"), Some((10006, None)));

        // A full range: a held slot is kept even by a younger Gateway; the
        // Gateway with no slot is left without, whatever its age.
        let full = GatewayPorts::assign(
            Some(PortRange::new(10000, 10001).unwrap()),
            &[claim("older", 1, false), holding("holder", 2, 10000)],
        );
        assert_eq!(ports(&full, "holder"), Some((10000, None)));
        assert_eq!(
            full.unassigned().collect::<Vec<_>>(),
            [&ObjectKey::new("infra", "older")]
        );
    }

    #[test]
    fn a_request_belongs_to_the_listener_whose_hostname_fits_it_best() {
        let listener = |name: &str, tls: bool, hostname: Option<&str>| ListenerHost {
            name: Arc::from(name),
            tls,
            hostname: hostname.map(str::to_owned),
        };
        let p = GatewayPorts::assign(
            Some(PortRange::new(10000, 10001).unwrap()),
            &[PortClaim {
                listeners: vec![
                    listener("any", false, None),
                    listener("wide", false, Some("*.example.com")),
                    listener("narrow", false, Some("*.foo.example.com")),
                    listener("exact", false, Some("abc.foo.example.com")),
                    listener("secure", true, Some("*.example.com")),
                ],
                ..claim("g", 1, true)
            }],
        );
        let at = |tls, host| p.listener_for("infra/g", tls, host);
        assert_eq!(at(false, "abc.foo.example.com"), Some("exact"));
        assert_eq!(at(false, "def.foo.example.com"), Some("narrow"));
        assert_eq!(
            at(false, "a.b.foo.example.com"),
            Some("narrow"),
            "a wildcard spans labels"
        );
        assert_eq!(at(false, "bar.example.com"), Some("wide"));
        assert_eq!(
            at(false, "example.com"),
            Some("any"),
            "a wildcard needs a label before it"
        );
        assert_eq!(at(false, "other.org"), Some("any"));
        assert_eq!(at(true, "bar.example.com"), Some("secure"));
        assert_eq!(at(true, "other.org"), None, "no TLS listener takes it");
        assert_eq!(p.listener_for("infra/none", false, "x"), None);
    }

    #[test]
    fn listeners_to_open_and_close_follow_the_assignment() {
        let range = Some(PortRange::new(10000, 10099).unwrap());
        let before = GatewayPorts::assign(range, &[claim("a", 1, true), claim("b", 2, false)]);
        assert_eq!(
            before.listeners().into_iter().collect::<Vec<_>>(),
            [(10000, false), (10001, true), (10002, false)]
        );
        assert!(before.changes_to(&before).is_empty());
        // a deleted before any Service held a slot: b moves down to a's
        // slot and c takes b's; a's TLS port closes.
        let after = GatewayPorts::assign(range, &[claim("b", 2, false), claim("c", 3, false)]);
        let changes = before.changes_to(&after);
        assert_eq!(changes.open, []);
        assert_eq!(changes.close, [(10001, true)]);
        assert_eq!(after.gateway_at(10000), Some("infra/b"), "kept port, new Gateway");
        // From no range at all: everything opens; back: everything closes.
        let none = GatewayPorts::default();
        assert_eq!(none.changes_to(&after).open, [(10000, false), (10002, false)]);
        assert_eq!(after.changes_to(&none).close, [(10000, false), (10002, false)]);
    }

    #[test]
    fn the_range_reads_first_dash_last_and_refuses_what_cannot_serve() {
        let r: PortRange = " 10000 - 10099 ".parse().unwrap();
        assert_eq!((r.first(), r.last(), r.slots()), (10000, 10099, 50));
        assert_eq!(r.to_string(), "10000-10099");
        let last: PortRange = "65534-65535".parse().unwrap();
        let p = GatewayPorts::assign(Some(last), &[claim("a", 1, true)]);
        assert_eq!(ports(&p, "a"), Some((65534, Some(65535))), "no overflow at the top");
        assert!(matches!("10000".parse::<PortRange>(), Err(PortRangeError::Syntax(_))));
        assert!(matches!("a-b".parse::<PortRange>(), Err(PortRangeError::Syntax(_))));
        assert!(matches!(
            "10000-70000".parse::<PortRange>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!("0-10".parse::<PortRange>(), Err(PortRangeError::Empty { .. })));
        assert!(matches!("10-9".parse::<PortRange>(), Err(PortRangeError::Empty { .. })));
        assert!(matches!(
            "10-10".parse::<PortRange>(),
            Err(PortRangeError::TooSmall { .. })
        ));
    }
}
