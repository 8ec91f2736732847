//! A real Redis Cluster for the tests: three `redis-server --cluster-enabled yes`
//! masters on free ports (no replicas), joined with `redis-cli --cluster create`, each
//! with its AOF in a folder of its own; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, own_redis_up, signal};

/// One master of a [`RedisCluster`].
pub struct ClusterNode {
    pub port: u16,
    /// The cluster bus port (`--cluster-port`; chosen free, not `port + 10000`).
    pub bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as `redis-cli --cluster` names nodes.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain connection to this node (no redirects followed).
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the child on its ports; false (child gone) if one was taken.
    fn launch(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-port", &self.bus_port.to_string()])
            // A node that stops answering is marked failed after this long.
            .args(["--cluster-node-timeout", "2000"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = own_redis_up(child, &self.url());
        self.child.is_some()
    }

    /// SIGKILLs the node (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the node (it flushes its AOF).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts the node again on its ports, from its AOF and `nodes.conf`: it rejoins the
    /// cluster with the slots it had.
    pub fn start_again(&mut self) {
        let since = Instant::now();
        while !self.launch() {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "port {} stayed taken",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters serving every slot.
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Starts three nodes under `dir` (`node-0`, ...), creates the cluster and waits until
    /// every node reports `cluster_state:ok`.
    pub fn start(dir: &Path) -> Self {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut node = ClusterNode {
                port: free_port(),
                bus_port: free_port(),
                dir: dir.join(format!("node-{i}")),
                child: None,
            };
            let mut tries = 0;
            while !node.launch() {
                tries += 1;
                assert!(tries < 10, "redis-server did not start on any of 10 ports");
                node.port = free_port();
                node.bus_port = free_port();
            }
            nodes.push(node);
        }
        let cluster = RedisCluster { nodes };
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes.iter().map(ClusterNode::addr))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and knows every master.
    pub fn wait_ok(&self, limit: Duration) {
        let since = Instant::now();
        let masters = self.nodes.len();
        loop {
            let ok = self.nodes.iter().filter(|n| n.running()).all(|n| {
                let mut conn = n.conn();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut conn)
                    .unwrap_or_default();
                let live_masters = nodes
                    .lines()
                    .filter(|l| l.contains("master") && !l.contains("fail"))
                    .count();
                info.contains("cluster_state:ok") && live_masters == masters
            });
            if ok {
                return;
            }
            assert!(
                since.elapsed() < limit,
                "the cluster did not reach cluster_state:ok within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,...`: what `--redis-cluster-nodes` takes.
    pub fn nodes_arg(&self) -> String {
        self.nodes
            .iter()
            .map(ClusterNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `ServiceOptions::extra` pair that points a service at this cluster (with an
    /// empty `redis_url`).
    pub fn service_flag(&self) -> (&'static str, String) {
        ("redis-cluster-nodes", self.nodes_arg())
    }

    /// A pool on the cluster, as the service's crates take one.
    pub fn pool(&self) -> tapedeck_store::Pool {
        tapedeck_store::Pool::cluster(&self.nodes.iter().map(ClusterNode::url).collect::<Vec<_>>())
            .unwrap()
    }

    /// A connection that follows the cluster's redirects (any key, any node).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(
            self.nodes
                .iter()
                .filter(|n| n.running())
                .map(ClusterNode::url)
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .get_connection()
        .unwrap()
    }

    /// The index of the node serving `key`'s slot: the one that answers for it without
    /// a `MOVED` redirect.
    pub fn node_of(&self, key: &str) -> usize {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.running() {
                continue;
            }
            let reply: redis::RedisResult<bool> =
                redis::cmd("EXISTS").arg(key).query(&mut node.conn());
            if reply.is_ok() {
                return i;
            }
        }
        panic!("no running node serves {key}");
    }

    /// `CLUSTER MYID` of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[i].conn())
            .unwrap()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a node runs");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node.conn())
            .unwrap()
    }

    /// Moves the slot of `key`, with its keys, to node `to` (`CLUSTER SETSLOT`
    /// `IMPORTING`/`MIGRATING`, `MIGRATE`, then `SETSLOT NODE` on every node): clients
    /// that knew the old owner get `MOVED`.
    pub fn migrate_slot_of(&self, key: &str, to: usize) {
        let slot = self.slot_of(key);
        let from = self.node_of(key);
        assert_ne!(from, to, "slot {slot} is on node {to} already");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let setslot = |node: usize, how: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .query(&mut self.nodes[node].conn())
                .unwrap();
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        let mut source = self.nodes[from].conn();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut source)
                .unwrap();
        }
        for node in 0..self.nodes.len() {
            if self.nodes[node].running() {
                setslot(node, "NODE", &to_id);
            }
        }
        self.wait_ok(Duration::from_secs(10));
    }

    /// Every command the cluster has run since its nodes started (`INFO commandstats`,
    /// summed over the running nodes), these queries included.
    pub fn commands_total(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query(&mut n.conn())
                    .unwrap();
                info.lines()
                    .filter_map(|l| l.split("calls=").nth(1))
                    .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }
}
