//! The network namespace `scripts/faults` runs this binary in, and the packet filter rules a
//! scenario adds there. Nothing here reaches outside that namespace: the suite refuses to
//! add a rule unless this process is inside the namespace named in `PAYHOOK_FAULTS_NETNS`.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// Panics unless this process runs inside the namespace `scripts/faults` made.
pub fn require_namespace() -> String {
    let name = std::env::var("PAYHOOK_FAULTS_NETNS")
        .expect("the fault scenarios run inside the namespace scripts/faults makes");
    let ours = std::fs::metadata("/proc/self/ns/net").expect("this process's namespace").ino();
    let named = std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"))
        .ino();
    assert_eq!(ours, named, "not inside namespace {name}: refusing to inject faults");
    name
}

/// An `iptables` rule in this namespace, deleted again when dropped.
pub struct Rule {
    spec: Vec<String>,
}

impl Rule {
    /// Appends `spec` (e.g. `INPUT -i lo -p tcp --dport 5432 -j DROP`) to the filter table.
    pub fn add(spec: &str) -> Rule {
        require_namespace();
        let spec: Vec<String> = spec.split_whitespace().map(str::to_owned).collect();
        iptables("-A", &spec);
        Rule { spec }
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        iptables("-D", &self.spec);
    }
}

fn iptables(action: &str, spec: &[String]) {
    let out =
        Command::new("iptables").arg("-w").arg(action).args(spec).output().expect("iptables runs");
    assert!(
        out.status.success() || action == "-D",
        "iptables {action} {}: {}",
        spec.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
