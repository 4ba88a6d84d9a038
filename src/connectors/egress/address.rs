//! Which addresses a job may never reach, whatever an allow list says. Pure.
//!
//! Refused: the unspecified addresses (`connect()` to 0.0.0.0 or `::` reaches
//! this machine), link-local addresses, the cloud metadata endpoints, and any
//! IPv6 address that stands for a refused IPv4 one (IPv4-mapped, -translated
//! and -compatible forms, NAT64 prefixes). Loopback and private addresses are
//! not refused here: a connector's `base_url` or `allowed_hosts` must name
//! them, and that is the origin check's job ([`super::origin`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address was refused, least telling first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// 0.0.0.0/8 and `::`.
    Unspecified,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// A cloud provider's instance metadata endpoint.
    Metadata,
}

/// Why an address is refused: its class, and the IPv4 address it carries
/// when it is an IPv6 form of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub class: Class,
    pub embedded: Option<Ipv4Addr>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.class {
            Class::Unspecified => "an unspecified address (it connects to this machine)",
            Class::LinkLocal => "a link-local address",
            Class::Metadata => "a cloud metadata endpoint",
        })?;
        if let Some(v4) = self.embedded {
            write!(f, " ({v4} written as an IPv6 address)")?;
        }
        Ok(())
    }
}

/// AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack (169.254.169.254) and
/// Alibaba Cloud (100.100.100.200).
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
];

/// AWS's IPv6 instance metadata endpoint.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// Why `ip` is never reachable from jobs, or `None` when the allow list
/// decides.
pub fn forbidden(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4).map(|class| Refusal {
            class,
            embedded: None,
        }),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Class> {
    if METADATA_V4.contains(&ip) {
        Some(Class::Metadata)
    } else if ip.octets()[0] == 0 {
        // "This network": Linux connects 0.0.0.0 to the local host.
        Some(Class::Unspecified)
    } else if ip.is_link_local() {
        Some(Class::LinkLocal)
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let direct = if ip.is_unspecified() {
        Some(Class::Unspecified)
    } else if METADATA_V6.contains(&ip) {
        Some(Class::Metadata)
    } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
        Some(Class::LinkLocal)
    } else {
        None
    };
    if let Some(class) = direct {
        return Some(Refusal {
            class,
            embedded: None,
        });
    }
    // A local-use NAT64 address reads differently under each layout; name
    // the most telling class any reading gives.
    embedded_v4(ip)
        .into_iter()
        .filter_map(|e| {
            let class = forbidden_v4(e.v4)?;
            // A NAT64 gateway does not turn 0.0.0.0 into this machine.
            let counts = !(e.via_nat64 && class == Class::Unspecified);
            counts.then_some(Refusal {
                class,
                embedded: Some(e.v4),
            })
        })
        .max_by_key(|r| r.class)
}

/// An IPv4 address carried inside an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedded {
    pub v4: Ipv4Addr,
    /// Reached through a NAT64 gateway rather than this host's own stack.
    pub via_nat64: bool,
}

/// Every IPv4 address `ip` may stand for on the way out: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 through the well-known prefix (`64:ff9b::/96`) and
/// through the local-use prefix (`64:ff9b:1::/48`) in each RFC 6052 layout a
/// network may pick inside it (/48, /56, /64, /96).
pub fn embedded_v4(ip: Ipv6Addr) -> Vec<Embedded> {
    let s = ip.segments();
    let o = ip.octets();
    let local = |a: u8, b: u8, c: u8, d: u8| Embedded {
        v4: Ipv4Addr::new(a, b, c, d),
        via_nat64: false,
    };
    let nat64 = |a: u8, b: u8, c: u8, d: u8| Embedded {
        v4: Ipv4Addr::new(a, b, c, d),
        via_nat64: true,
    };
    let mut out = Vec::new();
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let translated = s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0;
    // `::` and `::1` are IPv6's own unspecified and loopback addresses.
    let compatible = s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback();
    if mapped || translated || compatible {
        out.push(local(o[12], o[13], o[14], o[15]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        out.push(nat64(o[12], o[13], o[14], o[15]));
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        // RFC 6052 section 2.2: bits 64-71 are left out, so the address
        // straddles them when the prefix is shorter than /64.
        out.push(nat64(o[12], o[13], o[14], o[15]));
        out.push(nat64(o[9], o[10], o[11], o[12]));
        out.push(nat64(o[7], o[9], o[10], o[11]));
        out.push(nat64(o[6], o[7], o[9], o[10]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form the issue names, and their neighbours that stay allowed.
    const TABLE: &[(&str, Option<Class>)] = &[
        // Unspecified, and the rest of 0.0.0.0/8.
        ("0.0.0.0", Some(Class::Unspecified)),
        ("0.1.2.3", Some(Class::Unspecified)),
        ("::", Some(Class::Unspecified)),
        ("::ffff:0.0.0.0", Some(Class::Unspecified)),
        // Link-local.
        ("169.254.0.1", Some(Class::LinkLocal)),
        ("169.254.255.255", Some(Class::LinkLocal)),
        ("fe80::1", Some(Class::LinkLocal)),
        ("febf:ffff::1", Some(Class::LinkLocal)),
        ("::ffff:169.254.1.2", Some(Class::LinkLocal)),
        ("64:ff9b::169.254.1.2", Some(Class::LinkLocal)),
        // Metadata, written every way.
        ("169.254.169.254", Some(Class::Metadata)),
        ("100.100.100.200", Some(Class::Metadata)),
        ("fd00:ec2::254", Some(Class::Metadata)),
        ("::ffff:169.254.169.254", Some(Class::Metadata)),
        ("::ffff:a9fe:a9fe", Some(Class::Metadata)),
        ("::ffff:0:169.254.169.254", Some(Class::Metadata)),
        ("::a9fe:a9fe", Some(Class::Metadata)),
        ("::169.254.169.254", Some(Class::Metadata)),
        ("64:ff9b::a9fe:a9fe", Some(Class::Metadata)),
        ("64:ff9b::100.100.100.200", Some(Class::Metadata)),
        ("::ffff:100.100.100.200", Some(Class::Metadata)),
        ("::6464:64c8", Some(Class::Metadata)),
        // Local-use NAT64, one per RFC 6052 layout: /48, /56, /64, /96.
        ("64:ff9b:1:a9fe:a9:fe00::", Some(Class::Metadata)),
        ("64:ff9b:1:a9:fe:a9fe::", Some(Class::Metadata)),
        ("64:ff9b:1::a9:fea9:fe00:0", Some(Class::Metadata)),
        ("64:ff9b:1::a9fe:a9fe", Some(Class::Metadata)),
        ("64:ff9b:1:6464:64:c800::", Some(Class::Metadata)),
        // Allowed here; the origin check decides.
        ("127.0.0.1", None),
        ("::1", None),
        ("::ffff:127.0.0.1", None),
        ("10.0.0.1", None),
        ("192.168.1.10", None),
        ("100.100.100.201", None),
        ("100.64.0.1", None),
        ("169.253.255.255", None),
        ("169.255.0.1", None),
        ("1.1.1.1", None),
        ("fec0::1", None),
        ("fe00::1", None),
        ("fd00:ec2::253", None),
        ("2001:db8::a9fe:a9fe", None),
        ("64:ff9b::1.1.1.1", None),
        ("64:ff9b:2::a9fe:a9fe", None),
        // NAT64 of 0.0.0.0 is the gateway's business, not this machine's.
        ("64:ff9b::", None),
        ("64:ff9b:1::1.2.3.4", None),
        ("64:ff9b:1::8.8.8.8", None),
        ("::ffff:1:a9fe:a9fe", None),
    ];

    #[test]
    fn every_form_is_classified() {
        for (text, want) in TABLE {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(forbidden(ip).map(|r| r.class), *want, "{text}");
        }
    }

    #[test]
    fn an_ipv6_form_names_the_ipv4_address_it_carries() {
        let r = forbidden("64:ff9b::a9fe:a9fe".parse().unwrap()).unwrap();
        assert_eq!(r.embedded, Some(Ipv4Addr::new(169, 254, 169, 254)));
        assert_eq!(
            r.to_string(),
            "a cloud metadata endpoint (169.254.169.254 written as an IPv6 address)"
        );
        let r = forbidden("fd00:ec2::254".parse().unwrap()).unwrap();
        assert_eq!(r.embedded, None);
    }

    #[test]
    fn loopback_and_unspecified_ipv6_are_not_read_as_compatible_ipv4() {
        assert!(embedded_v4(Ipv6Addr::LOCALHOST).is_empty());
        assert!(embedded_v4(Ipv6Addr::UNSPECIFIED).is_empty());
        assert_eq!(
            embedded_v4("::a9fe:a9fe".parse().unwrap()),
            vec![Embedded {
                v4: Ipv4Addr::new(169, 254, 169, 254),
                via_nat64: false
            }]
        );
    }
}
