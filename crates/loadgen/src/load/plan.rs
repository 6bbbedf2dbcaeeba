//! Who is who in a load: which user each connection belongs to, and which connection starts
//! each run.
//!
//! Connection `c` belongs to user `c mod U`, so a user's connections are spread over the
//! whole connect phase (and over the source addresses). Run `k` goes to user `k mod U`
//! first, so runs spread over users before any user gets a second one, and then round-robin
//! over that user's connections, each user starting the round at its own place (its index):
//! so at any moment the runs being started are spread over the connections' places too.
//! With each user's connections on different nodes (its `n`-th connection on the `n`-th
//! URL), every node starts its share of the runs all the time, and each user's runs still
//! go to its nodes in turn. (Had every user started at its first connection, all the runs of
//! one round of the users went to one node and the next round's to the other: each node
//! took the whole load for one round, then none.)

/// The users and connections of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Connections (N).
    pub connections: usize,
    /// Users (U ≤ N).
    pub users: usize,
}

impl Layout {
    /// The user of connection `connection`.
    pub fn user_of(&self, connection: usize) -> usize {
        connection % self.users
    }

    /// How many connections user `user` has.
    pub fn connections_of(&self, user: usize) -> usize {
        self.connections / self.users + usize::from(user < self.connections % self.users)
    }

    /// The connection that starts run `k`.
    pub fn starter(&self, k: usize) -> usize {
        let user = k % self.users;
        let nth = (k / self.users + user) % self.connections_of(user);
        user + nth * self.users
    }

    /// The user id of user `user`: `<prefix>-<index>`, zero-padded so ids sort.
    pub fn user_id(prefix: &str, user: usize) -> String {
        format!("{prefix}-{user:05}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starters of the first `runs` runs, as (connection, its user).
    fn check(layout: Layout, runs: usize, expected: &[(usize, usize)]) {
        let got: Vec<(usize, usize)> = (0..runs)
            .map(|k| {
                let c = layout.starter(k);
                (c, layout.user_of(c))
            })
            .collect();
        assert_eq!(got, expected, "{layout:?}");
    }

    #[test]
    fn runs_spread_over_users_then_over_their_connections() {
        let one_each = Layout {
            connections: 3,
            users: 3,
        };
        check(
            one_each,
            6,
            &[(0, 0), (1, 1), (2, 2), (0, 0), (1, 1), (2, 2)],
        );
        // 5 connections of 2 users: user 0 has 0, 2, 4; user 1 has 1, 3.
        let uneven = Layout {
            connections: 5,
            users: 2,
        };
        assert_eq!([uneven.connections_of(0), uneven.connections_of(1)], [3, 2]);
        check(
            uneven,
            8,
            &[
                (0, 0),
                (3, 1),
                (2, 0),
                (1, 1),
                (4, 0),
                (3, 1),
                (0, 0),
                (1, 1),
            ],
        );
    }

    #[test]
    fn two_nodes_start_half_the_runs_each_at_any_time_and_a_user_alternates() {
        // Each user's two connections on two nodes: its n-th on node n (as `connect` places
        // them: connection c on URL (c / users) mod URLs).
        for users in [2, 7, 10, 5_000] {
            let layout = Layout {
                connections: 2 * users,
                users,
            };
            let node = |k: usize| layout.starter(k) / users % 2;
            // Any `users` runs in a row, wherever they begin: within two of even (a round of
            // the users is as even as it can be; where two rounds meet, one node may start
            // two runs in a row).
            for start in [0, 1, users / 2, users, 3 * users + 1] {
                let on_first = (start..start + users).filter(|&k| node(k) == 0).count();
                let most = if start % users == 0 { 1 } else { 2 };
                assert!(
                    on_first.abs_diff(users - on_first) <= most,
                    "{users} users, runs {start}..: {on_first} on the first node"
                );
            }
            for user in 0..users {
                let nodes: Vec<usize> = (0..6).map(|round| node(round * users + user)).collect();
                assert!(
                    nodes.windows(2).all(|pair| pair[0] != pair[1]),
                    "user {user}'s runs go to {nodes:?}"
                );
            }
        }
    }

    #[test]
    fn every_starter_is_a_connection_of_the_runs_user() {
        for (connections, users) in [(1, 1), (7, 3), (10, 10), (100, 7), (19_000, 5_000)] {
            let layout = Layout { connections, users };
            let total: usize = (0..users).map(|u| layout.connections_of(u)).sum();
            assert_eq!(total, connections);
            for k in 0..3 * connections {
                let c = layout.starter(k);
                assert!(c < connections, "{layout:?} run {k} -> {c}");
                assert_eq!(layout.user_of(c), k % users, "{layout:?} run {k}");
            }
        }
    }

    #[test]
    fn user_ids_are_valid_and_sort() {
        let a = Layout::user_id("lg", 7);
        assert_eq!(a, "lg-00007");
        assert!(core_context::UserId::parse(&a).is_ok());
        assert!(Layout::user_id("lg", 10) > Layout::user_id("lg", 9));
    }
}
