//! Where the CPU goes during a run: CPU seconds per process group (PostgreSQL, RabbitMQ, the
//! relay, the user-service, this load generator, everything else), read from `/proc` before and
//! after, as a share of the machine's capacity. On a 2-core machine shared by all of them this
//! is the first-order profile: it says which process a faster run would have to relieve.
//! Processes that exit during the run (a compiler someone else runs, short-lived connections)
//! are no longer in `/proc`: their share shows as "exited processes", the machine's busy time
//! that no living process accounts for.

use sandbox::process::Process;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Ticks per second of `/proc` CPU times (`getconf CLK_TCK`: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

pub struct Snapshot {
    at: Instant,
    per_group: BTreeMap<String, u64>,
    /// Machine-wide (busy, all) ticks from `/proc/stat`.
    machine: (u64, u64),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuProfile {
    pub wall_seconds: f64,
    /// Busy share of all cores over the run, percent.
    pub machine_busy_percent: f64,
    /// Group → (CPU seconds, percent of all cores' capacity), largest first.
    pub groups: Vec<GroupCpu>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupCpu {
    pub group: String,
    pub cpu_seconds: f64,
    pub percent_of_machine: f64,
}

impl CpuProfile {
    /// `postgresql 45% · rabbitmq 30% · …` for the table.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.percent_of_machine >= 0.5)
            .map(|g| format!("{} {:.0}%", g.group, g.percent_of_machine))
            .collect();
        format!(
            "busy {:.0}%: {}",
            self.machine_busy_percent,
            parts.join(", ")
        )
    }
}

fn group_of(pid: u32, comm: &str, services: &[&Process]) -> String {
    if let Some(s) = services.iter().find(|s| s.pid == pid) {
        return s.name.to_owned();
    }
    if pid == std::process::id() {
        return "bench (load generator)".to_owned();
    }
    match comm {
        "postgres" => "postgresql".to_owned(),
        "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => "rabbitmq".to_owned(),
        _ => "other".to_owned(),
    }
}

/// (comm, utime + stime) of one process.
fn process_ticks(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let all: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (all.saturating_sub(idle), all)
}

pub fn snapshot(services: &[&Process]) -> Snapshot {
    let mut per_group = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((comm, ticks)) = process_ticks(pid) {
                *per_group.entry(group_of(pid, &comm, services)).or_insert(0) += ticks;
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        per_group,
        machine: machine_ticks(),
    }
}

/// CPU used per group since `before`.
pub fn since(before: &Snapshot, services: &[&Process]) -> CpuProfile {
    let after = snapshot(services);
    let wall = (after.at - before.at).as_secs_f64().max(1e-9);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut groups: Vec<GroupCpu> = after
        .per_group
        .iter()
        .map(|(group, &ticks)| {
            let start = before.per_group.get(group).copied().unwrap_or(0);
            let cpu_seconds = ticks.saturating_sub(start) as f64 / TICKS_PER_SECOND;
            GroupCpu {
                group: group.clone(),
                cpu_seconds,
                percent_of_machine: 100.0 * cpu_seconds / (wall * cores),
            }
        })
        .collect();
    let busy = after.machine.0.saturating_sub(before.machine.0) as f64;
    let all = after.machine.1.saturating_sub(before.machine.1) as f64;
    // Busy time no living process accounts for: processes that ended during the run, such as
    // a compiler someone else ran on the machine. Large values mean the run was disturbed.
    let attributed: f64 = groups.iter().map(|g| g.cpu_seconds).sum();
    let busy_seconds = busy / TICKS_PER_SECOND;
    if busy_seconds > attributed {
        let cpu_seconds = busy_seconds - attributed;
        groups.push(GroupCpu {
            group: "exited processes".to_owned(),
            cpu_seconds,
            percent_of_machine: 100.0 * cpu_seconds / (wall * cores),
        });
    }
    groups.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    CpuProfile {
        wall_seconds: wall,
        machine_busy_percent: if all > 0.0 { 100.0 * busy / all } else { 0.0 },
        groups,
    }
}
