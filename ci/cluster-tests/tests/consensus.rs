//! The N-node mode on the local cluster (`ci/cluster up --consensus`): three
//! postgres + vip VMs and three etcd VMs, every job and package from the
//! compiled release. The scenarios (`cluster_tests::consensus`) share one
//! cluster, in order; each checks that no two nodes took writes at once, no
//! two haproxies routed writes to two nodes, and, with synchronous commits
//! (the default), no acknowledged write was lost.

use cluster_tests::consensus::Fault;
use cluster_tests::{report_line, Cluster};

#[test]
fn three_nodes_on_etcd_fail_over_switch_over_and_ride_out_store_faults_without_losing_a_write() {
    let cluster = Cluster::up_consensus(true);
    for fault in Fault::ALL {
        let run = fault.run(&cluster);
        report_line(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
            &format!("3 nodes on etcd, synchronous: {run}"),
        );
    }
}
