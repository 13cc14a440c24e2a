//! The few IP address facts the checks need: subnets in CIDR form and BOSH's
//! address ranges (`10.0.0.2 - 10.0.0.9`, a single address, or a CIDR).

use std::net::IpAddr;

/// A subnet such as `10.244.232.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not in CIDR form (like 10.0.0.0/24)"))?;
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{addr}` is not an IP address"))?;
        let prefix: u8 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|&p| p <= bits(base))
            .ok_or_else(|| {
                format!("`{text}`: `{prefix}` is not a prefix length for this address family")
            })?;
        Ok(Cidr { base, prefix })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let (first, last) = self.first_last();
        same_family(self.base, addr) && (first..=last).contains(&number(addr))
    }

    /// What `addr` is when no host of the subnet can hold it: the network
    /// address (IPv6: the subnet-router anycast address) or the IPv4
    /// broadcast address. Subnets with fewer than two host bits (/31, /32,
    /// IPv6 /127, /128) have neither.
    pub fn unusable_role(&self, addr: IpAddr) -> Option<&'static str> {
        if !self.contains(addr) || bits(self.base) - self.prefix < 2 {
            return None;
        }
        let (first, last) = self.first_last();
        match (number(addr), self.base.is_ipv4()) {
            (n, true) if n == first => Some("network address"),
            (n, false) if n == first => Some("subnet-router anycast address"),
            (n, true) if n == last => Some("broadcast address"),
            _ => None,
        }
    }

    /// The first and last address of the subnet, as numbers.
    fn first_last(&self) -> (u128, u128) {
        let host_bits = u32::from(bits(self.base) - self.prefix);
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let first = number(self.base) & !mask;
        (first, first | mask)
    }
}

/// An inclusive address range, as BOSH's `reserved` and `static` lists write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, String> {
        if text.contains('/') {
            let cidr = Cidr::parse(text)?;
            let (first, last) = cidr.first_last();
            return Ok(IpRange {
                first: from_number(cidr.base, first),
                last: from_number(cidr.base, last),
            });
        }
        let parse = |part: &str| {
            part.trim().parse::<IpAddr>().map_err(|_| {
                format!("`{text}` is not an address or an address range (like 10.0.0.2 - 10.0.0.9)")
            })
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (parse(first)?, parse(last)?),
            None => (parse(text)?, parse(text)?),
        };
        if !same_family(first, last) || number(first) > number(last) {
            return Err(format!(
                "`{text}` is not an ascending range of one address family"
            ));
        }
        Ok(IpRange { first, last })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        same_family(self.first, addr)
            && (number(self.first)..=number(self.last)).contains(&number(addr))
    }

    /// How many addresses the range holds (an IPv6 ::/0 saturates).
    pub fn address_count(&self) -> u128 {
        (number(self.last) - number(self.first)).saturating_add(1)
    }

    /// The addresses, in order; lazy, so a wide range costs only what is taken.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        let family = self.first;
        (number(self.first)..=number(self.last)).map(move |n| from_number(family, n))
    }
}

fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_number(family: IpAddr, value: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4((value as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(value.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_membership() {
        let net = Cidr::parse("10.244.232.0/24").unwrap();
        assert!(net.contains(ip("10.244.232.0")));
        assert!(net.contains(ip("10.244.232.255")));
        assert!(!net.contains(ip("10.244.233.0")));
        assert!(!net.contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("fd00::/64").unwrap().contains(ip("fd00::5")));
        assert!(Cidr::parse("10.0.0.7/32").unwrap().contains(ip("10.0.0.7")));
    }

    #[test]
    fn network_and_broadcast_addresses_are_told_apart_from_host_addresses() {
        let net = Cidr::parse("10.244.232.0/24").unwrap();
        assert_eq!(
            net.unusable_role(ip("10.244.232.0")),
            Some("network address")
        );
        assert_eq!(
            net.unusable_role(ip("10.244.232.255")),
            Some("broadcast address")
        );
        assert_eq!(net.unusable_role(ip("10.244.232.1")), None);
        assert_eq!(net.unusable_role(ip("10.244.232.254")), None);
        assert_eq!(
            net.unusable_role(ip("10.0.0.0")),
            None,
            "outside the subnet"
        );
        let point_to_point = Cidr::parse("10.0.0.0/31").unwrap();
        assert_eq!(point_to_point.unusable_role(ip("10.0.0.0")), None);
        assert_eq!(point_to_point.unusable_role(ip("10.0.0.1")), None);
        let v6 = Cidr::parse("fd00::/64").unwrap();
        assert_eq!(
            v6.unusable_role(ip("fd00::")),
            Some("subnet-router anycast address")
        );
        assert_eq!(v6.unusable_role(ip("fd00::ffff:ffff:ffff:ffff")), None);
    }

    #[test]
    fn bad_cidrs_are_refused() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/24", "10.0.0.0/-1", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn bosh_ranges() {
        let range = IpRange::parse("10.0.0.2 - 10.0.0.9").unwrap();
        assert!(range.contains(ip("10.0.0.2")) && range.contains(ip("10.0.0.9")));
        assert!(!range.contains(ip("10.0.0.10")));
        assert!(IpRange::parse("10.0.0.5").unwrap().contains(ip("10.0.0.5")));
        assert!(IpRange::parse("10.0.0.0/30")
            .unwrap()
            .contains(ip("10.0.0.3")));
        assert!(IpRange::parse("10.0.0.9-10.0.0.2").is_err());
        assert!(IpRange::parse("10.0.0.1 - ::2").is_err());
        assert!(IpRange::parse("nonsense").is_err());
    }

    #[test]
    fn range_addresses_and_counts() {
        let range = IpRange::parse("10.0.0.254 - 10.0.1.1").unwrap();
        assert_eq!(range.address_count(), 4);
        let addresses: Vec<IpAddr> = range.addresses().collect();
        assert_eq!(
            addresses,
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"].map(ip)
        );
        assert_eq!(IpRange::parse("10.0.0.5").unwrap().address_count(), 1);
        let everything = IpRange::parse("::/0").unwrap();
        assert_eq!(everything.address_count(), u128::MAX);
        assert_eq!(everything.addresses().nth(1), Some(ip("::1")));
    }
}
