//! The store client against a real three-member etcd cluster over TLS.

use std::time::{Duration, Instant};

use pgcore::etcd::{Etcd, EtcdSettings, StoreErrorKind};
use testkit::{Certificates, EtcdCluster};

fn client(cluster: &EtcdCluster, endpoints: Vec<String>) -> Etcd {
    let (ca, certificate, private_key) = cluster.client_files();
    Etcd::new(EtcdSettings {
        endpoints,
        ca,
        certificate,
        private_key,
        timeout: Duration::from_secs(1),
    })
    .expect("cannot set up the client")
}

fn within(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

#[test]
fn a_key_created_on_a_lease_is_created_once_and_ends_with_its_lease() {
    let certificates = Certificates::new();
    let cluster = EtcdCluster::start(3, &certificates);
    let mut store = client(&cluster, cluster.endpoints());

    let lease = store.grant(2, within(5)).expect("grant");
    assert_eq!(lease.ttl, 2);
    assert!(store
        .create("/t/leader", "node-a", lease.id, within(5))
        .unwrap());
    assert!(
        !store.create("/t/leader", "node-b", 0, within(5)).unwrap(),
        "a second create of an existing key must fail"
    );
    let held = store.get("/t/leader", within(5)).unwrap().expect("the key");
    assert_eq!((held.value.as_str(), held.lease), ("node-a", lease.id));
    assert_eq!(store.keep_alive(lease.id, within(5)).unwrap(), Some(2));

    // Not kept alive, the lease expires and takes the key with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get("/t/leader", within(5)).unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the key outlived its lease by far"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(store.keep_alive(lease.id, within(5)).unwrap(), None);
    assert!(store.create("/t/leader", "node-b", 0, within(5)).unwrap());
}

#[test]
fn swap_and_delete_act_only_on_the_value_expected() {
    let certificates = Certificates::new();
    let cluster = EtcdCluster::start(1, &certificates);
    let mut store = client(&cluster, cluster.endpoints());

    store.put("/t/k", "one", 0, within(5)).unwrap();
    assert!(!store.swap("/t/k", "two", "three", 0, within(5)).unwrap());
    assert!(store.swap("/t/k", "one", "two", 0, within(5)).unwrap());
    assert!(!store.delete_if("/t/k", "one", within(5)).unwrap());
    assert_eq!(store.get("/t/k", within(5)).unwrap().unwrap().value, "two");
    store.put("/t/l", "x", 0, within(5)).unwrap();
    store.put("/u", "y", 0, within(5)).unwrap();
    let under: Vec<String> = store
        .get_prefix("/t/", within(5))
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(under, ["/t/k", "/t/l"]);
    assert!(store.delete_if("/t/k", "two", within(5)).unwrap());
    assert_eq!(store.get("/t/k", within(5)).unwrap(), None);
}

#[test]
fn a_member_that_answers_nothing_is_passed_over_for_the_next() {
    let certificates = Certificates::new();
    let mut cluster = EtcdCluster::start(3, &certificates);
    let mut store = client(&cluster, cluster.endpoints());
    store.put("/t/k", "v", 0, within(5)).unwrap();
    assert_eq!(store.endpoint(), cluster.members[0].endpoint());

    cluster.freeze_member(0);
    let kv = store
        .get("/t/k", within(10))
        .expect("another member answers");
    assert_eq!(kv.unwrap().value, "v");
    assert_ne!(store.endpoint(), cluster.members[0].endpoint());
    cluster.thaw_member(0);
}

#[test]
fn without_quorum_a_write_fails_by_its_deadline_and_the_store_answers_once_quorum_returns() {
    let certificates = Certificates::new();
    let mut cluster = EtcdCluster::start(3, &certificates);
    let mut store = client(&cluster, vec![cluster.members[0].endpoint()]);
    store.put("/t/k", "before", 0, within(5)).unwrap();

    cluster.kill_member(1);
    cluster.kill_member(2);
    let err = store
        .put("/t/k", "during", 0, within(3))
        .expect_err("a write without quorum must fail");
    assert_eq!(err.kind, StoreErrorKind::Unreachable, "{err}");

    // A write that timed out has an unknown outcome, as in any consensus
    // store: the lone member may hold it in its log and commit it once a
    // peer is back. The HA loop never takes a failed write for "not done".
    cluster.start_member(1);
    cluster.wait_healthy();
    let mut store = client(&cluster, cluster.endpoints());
    let value = store.get("/t/k", within(10)).unwrap().unwrap().value;
    assert!(["before", "during"].contains(&value.as_str()), "{value}");
    store.put("/t/k", "after", 0, within(10)).unwrap();
}

#[test]
fn a_client_whose_certificate_the_store_does_not_trust_is_refused() {
    let certificates = Certificates::new();
    let cluster = EtcdCluster::start(1, &certificates);
    let (ca, _, _) = cluster.client_files();
    let mut store = Etcd::new(EtcdSettings {
        endpoints: cluster.endpoints(),
        ca,
        certificate: certificates.foreign.certificate.clone(),
        private_key: certificates.foreign.private_key.clone(),
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    let err = store.get("/t/k", within(5)).expect_err("refused");
    // TLS 1.3: the server's verdict on our certificate arrives as an alert
    // on the first read, after a handshake the client saw succeed.
    assert!(err.message.contains("unknown ca"), "{err}");
}
