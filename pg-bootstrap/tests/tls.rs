//! pg-bootstrap between nodes that take replication over TLS only: the
//! clone, the WAL receiver and the rewind all verify the peer's certificate
//! (verify-full, certificates from the bosh CLI's generator).

mod common;

use std::fs;

use common::{finish, start_bootstrap_node, Site};
use testkit::Certificates;

/// The replication connections the primary serves, and whether each is TLS.
fn replication_over_tls(primary: &Site) -> Vec<String> {
    primary.column(
        "SELECT r.application_name || ' ssl=' || s.ssl || ' ' || coalesce(s.version, '') \
         FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
    )
}

#[test]
fn a_pair_clones_streams_and_rewinds_over_verified_tls() {
    let certs = Certificates::new();
    let (primary, replica) = (
        Site::with_tls(&certs.server, &certs.ca),
        Site::with_tls(&certs.server, &certs.ca),
    );
    start_bootstrap_node(&primary, &replica);
    primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");

    let clone = finish(replica.spawn_prepare(&[
        "--replication",
        "--peer",
        &primary.endpoint(),
        "--clone-wait",
        "30",
    ]));
    clone
        .expect_code(0, "the clone over TLS")
        .expect_decision(&format!("clone-from {}", primary.endpoint()));
    let auto_conf = fs::read_to_string(replica.data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("sslmode=''verify-full''")
            && auto_conf.contains(&format!("sslrootcert=''{}''", certs.ca.display())),
        "primary_conninfo must verify the primary: {auto_conf}"
    );
    replica.start();
    replica.wait_streaming();
    let streams = replication_over_tls(&primary);
    assert!(
        streams.len() == 1 && streams[0].contains("ssl=true TLSv1."),
        "the WAL must stream over TLS: {streams:?}"
    );
    assert_eq!(
        replica.value("SELECT conninfo ~ 'sslmode=verify-full' FROM pg_stat_wal_receiver"),
        "t"
    );

    // A failover: the replica takes over, the old primary crashes with a
    // diverged write and comes back through pg_rewind, over TLS again.
    replica.wait_caught_up(&primary);
    replica.promote();
    primary.execute("INSERT INTO t VALUES ('diverged')");
    replica.execute("INSERT INTO t VALUES ('after failover')");
    primary.kill9();
    let rejoin = primary.prepare(&[
        "--replication",
        "--peer",
        &replica.endpoint(),
        "--grace",
        "5",
        "--json",
    ]);
    rejoin.expect_code(0, "the rejoin over TLS");
    assert_eq!(rejoin.json()["method"], "rewind", "{}", rejoin.stderr);
    primary.start();
    primary.wait_streaming();
    replica.execute("INSERT INTO t VALUES ('streamed')");
    primary.wait_caught_up(&replica);
    assert_eq!(
        primary.column("SELECT v FROM t ORDER BY v"),
        ["after failover", "before", "streamed"]
    );
    let streams = replication_over_tls(&replica);
    assert!(
        streams.len() == 1 && streams[0].contains("ssl=true"),
        "the rewound node must stream over TLS: {streams:?}"
    );
}

#[test]
fn a_peer_whose_certificate_names_another_address_is_never_cloned() {
    let certs = Certificates::new();
    let primary = Site::with_tls(&certs.wrong_name, &certs.ca);
    let replica = Site::with_tls(&certs.server, &certs.ca);
    start_bootstrap_node(&primary, &replica);

    let run = replica.prepare(&[
        "--replication",
        "--peer",
        &primary.endpoint(),
        "--clone-wait",
        "3",
    ]);
    assert_ne!(run.code, 0, "cloned from a node that failed verification");
    assert!(
        run.stderr.contains("IP address mismatch") || run.stdout.contains("IP address mismatch"),
        "the refusal must say why: {}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!replica.data_dir.exists(), "a data directory was made");
}
