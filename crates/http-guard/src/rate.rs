//! Request rates on the HTTP API: per user (from the verified token) and per client address
//! for the history API and AG-UI, and per address for `POST /dev/token`.
//!
//! The address is the TCP peer's: behind a reverse proxy every request comes from the proxy's
//! address, so there the per-address limits bound the proxy as a whole (raise them, or limit
//! per client at the proxy). IPv6 peers are keyed by their /64, the block one host usually
//! holds. Each limiter is a `governor` keyed limiter (GCRA: a burst of the per-minute figure,
//! refilled evenly over the minute); keys idle for a full window are dropped by
//! `HttpLimits::retain_recent`, which the server's maintenance calls, so the maps stay
//! bounded by the clients of the last minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use core_context::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Requests per minute allowed on the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRates {
    /// Per user, on `/v1/*` and `/agui/*` together.
    pub per_user_per_minute: u32,
    /// Per client address, on `/v1/*` and `/agui/*` together.
    pub per_address_per_minute: u32,
    /// Per client address, on `POST /dev/token`.
    pub dev_token_per_address_per_minute: u32,
}

impl Default for HttpRates {
    /// Far above what the chat page asks for (at start: `/v1/me`, the thread list, the open
    /// thread and each of its runs), so a person never meets them; a script looping does.
    fn default() -> Self {
        Self {
            per_user_per_minute: 600,
            per_address_per_minute: 1_200,
            dev_token_per_address_per_minute: 30,
        }
    }
}

/// What a request was counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The signed-in user.
    User,
    /// The client's address.
    Address,
}

impl Key {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Address => "address",
        }
    }
}

/// A request over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Which limit.
    pub key: Key,
    /// The limit, per minute.
    pub per_minute: u32,
    /// When a request would pass again.
    pub retry_after: Duration,
}

/// One keyed limiter and its per-minute figure.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    per_minute: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)),
            per_minute: per_minute.get(),
        }
    }

    fn check(&self, key: &K, kind: Key, clock: &DefaultClock) -> Result<(), Limited> {
        self.limiter.check_key(key).map_err(|not_until| Limited {
            key: kind,
            per_minute: self.per_minute,
            retry_after: not_until.wait_time_from(clock.now()),
        })
    }
}

/// The HTTP API's limiters; one per server.
pub struct HttpLimits {
    per_user: Limiter<UserId>,
    per_address: Limiter<IpAddr>,
    dev_token: Limiter<IpAddr>,
    clock: DefaultClock,
}

impl HttpLimits {
    /// Limiters allowing `rates`.
    pub fn new(rates: HttpRates) -> Self {
        Self {
            per_user: Limiter::new(rates.per_user_per_minute),
            per_address: Limiter::new(rates.per_address_per_minute),
            dev_token: Limiter::new(rates.dev_token_per_address_per_minute),
            clock: DefaultClock::default(),
        }
    }

    /// Counts an API request from `address` (when known) by `user` (when its token is valid).
    pub fn api(&self, address: Option<IpAddr>, user: Option<&UserId>) -> Result<(), Limited> {
        if let Some(address) = address {
            self.per_address
                .check(&block(address), Key::Address, &self.clock)?;
        }
        if let Some(user) = user {
            self.per_user.check(user, Key::User, &self.clock)?;
        }
        Ok(())
    }

    /// Counts a `POST /dev/token` from `address`.
    pub fn dev_token(&self, address: IpAddr) -> Result<(), Limited> {
        self.dev_token
            .check(&block(address), Key::Address, &self.clock)
    }

    /// Forgets the keys whose limits are full again (idle for their window).
    pub fn retain_recent(&self) {
        self.per_user.limiter.retain_recent();
        self.per_address.limiter.retain_recent();
        self.dev_token.limiter.retain_recent();
    }

    /// Keys held, all limiters together (for tests of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.per_user.limiter.len() + self.per_address.limiter.len() + self.dev_token.limiter.len()
    }
}

/// The key of an address: an IPv4 address as it is, an IPv6 one as its /64 (a host usually
/// holds a whole /64 and can pick any address in it).
fn block(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: u32, per_address: u32) -> HttpLimits {
        HttpLimits::new(HttpRates {
            per_user_per_minute: per_user,
            per_address_per_minute: per_address,
            dev_token_per_address_per_minute: 2,
        })
    }

    #[test]
    fn a_user_past_the_limit_waits_and_others_do_not() {
        let limits = limits(3, 100);
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let here = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..3 {
            assert_eq!(limits.api(here, Some(&alice)), Ok(()));
        }
        let limited = limits.api(here, Some(&alice)).unwrap_err();
        assert_eq!((limited.key, limited.per_minute), (Key::User, 3));
        assert!(
            limited.retry_after > Duration::from_secs(15)
                && limited.retry_after <= Duration::from_secs(20),
            "one request back every 20 s: {:?}",
            limited.retry_after
        );
        assert_eq!(limits.api(here, Some(&bob)), Ok(()));
    }

    #[test]
    fn an_address_past_the_limit_waits_whoever_it_is() {
        let limits = limits(100, 2);
        let here = Some(IpAddr::from([10, 0, 0, 1]));
        let users: Vec<_> = ["u1", "u2", "u3"]
            .iter()
            .map(|u| UserId::parse(u).unwrap())
            .collect();
        assert_eq!(limits.api(here, Some(&users[0])), Ok(()));
        assert_eq!(limits.api(here, None), Ok(()));
        assert_eq!(
            limits.api(here, Some(&users[2])).unwrap_err().key,
            Key::Address
        );
        assert_eq!(
            limits.api(Some(IpAddr::from([10, 0, 0, 2])), Some(&users[2])),
            Ok(())
        );
        assert_eq!(limits.api(None, Some(&users[1])), Ok(()));
    }

    #[test]
    fn an_ipv6_host_is_one_key_across_its_64() {
        let limits = limits(100, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limits.dev_token(a), Ok(()));
        assert_eq!(limits.dev_token(b), Ok(()));
        assert!(limits.dev_token(a).is_err());
        assert_eq!(limits.dev_token(other), Ok(()));
    }

    #[test]
    fn keys_that_are_full_again_are_forgotten() {
        let limits = HttpLimits::new(HttpRates {
            per_user_per_minute: 60_000,
            per_address_per_minute: 60_000,
            dev_token_per_address_per_minute: 60_000,
        });
        for i in 0..50u8 {
            let _ = limits.dev_token(IpAddr::from([10, 0, 1, i]));
        }
        assert_eq!(limits.len(), 50);
        std::thread::sleep(Duration::from_millis(5));
        limits.retain_recent();
        assert_eq!(limits.len(), 0);
    }
}
