//! `anamo worker --vcpus-per-task N [--memory-per-task-gib G]`: the worker's slots derived
//! from the machine it runs on, so that every instance type of a fleet launched by one
//! `CreateFleet` (one launch template, one user data) gets its own slot count.
//!
//! The processors are those this process may use (`available_parallelism`: an EC2 instance's
//! vCPUs, unless a cgroup limits them); the memory is `MemTotal` of `/proc/meminfo` rounded
//! up to whole GiB, because the kernel reports a little less than the type's memory (about
//! 15.3 of 16 GiB) and EC2's figure is what the controller plans with. The rule itself is
//! [`TaskSize::slots`], the controller's too.

use crate::manifest::TaskSize;

/// The worker's slots: `--slots`, or derived from this machine with `--vcpus-per-task`.
pub(crate) fn slots_from_args(args: &super::WorkerArgs) -> Result<u32, String> {
    let vcpus = match args.vcpus_per_task {
        None => return Ok(args.slots),
        Some(0) => return Err("`--vcpus-per-task` must be at least 1".into()),
        Some(v) => v,
    };
    if args
        .memory_per_task_gib
        .is_some_and(|g| !(g.is_finite() && g > 0.0))
    {
        return Err("`--memory-per-task-gib` must be more than 0".into());
    }
    let size = TaskSize {
        vcpus,
        memory_gib: args.memory_per_task_gib,
    };
    let (slots, from) = slots_here(&size)?;
    tracing::info!(slots, vcpus_per_task = vcpus, machine = %from, "slots derived");
    Ok(slots)
}

/// The slots of a machine with `vcpus` processors and `mem_total_kib` of memory as
/// `/proc/meminfo` reports it.
pub(crate) fn slots_on(size: &TaskSize, vcpus: u32, mem_total_kib: u64) -> u32 {
    let gib = mem_total_kib.div_ceil(1024 * 1024);
    size.slots(vcpus, gib * 1024)
}

/// `MemTotal` in KiB from the text of `/proc/meminfo`.
pub(crate) fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The slots of this machine, with what they were derived from (for the log), or why they
/// cannot be.
pub(crate) fn slots_here(size: &TaskSize) -> Result<(u32, String), String> {
    let vcpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .map_err(|e| format!("cannot count this machine's processors: {e}"))?;
    let mem = if size.memory_gib.is_some() {
        let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| {
            format!("`--memory-per-task-gib` needs /proc/meminfo, which cannot be read: {e}")
        })?;
        mem_total_kib(&text).ok_or("no MemTotal line in /proc/meminfo")?
    } else {
        0
    };
    let slots = if size.memory_gib.is_some() {
        slots_on(size, vcpus, mem)
    } else {
        size.slots(vcpus, 0)
    };
    Ok((slots, format!("{vcpus} vCPUs, MemTotal {mem} KiB")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_rounds_up_to_what_the_type_has() {
        let size = TaskSize {
            vcpus: 2,
            memory_gib: Some(4.0),
        };
        // A 16 GiB, 8 vCPU instance reports about 15.3 GiB.
        assert_eq!(slots_on(&size, 8, 16_040_000), 4);
        assert_eq!(slots_on(&size, 16, 16_040_000), 4, "memory binds");
        let text = "MemTotal:       16040000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_kib(text), Some(16_040_000));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn flags_choose_the_slots() {
        let mut args = super::super::WorkerArgs::new("align");
        args.slots = 3;
        assert_eq!(slots_from_args(&args), Ok(3));
        args.vcpus_per_task = Some(0);
        assert!(slots_from_args(&args).unwrap_err().contains("at least 1"));
        args.vcpus_per_task = Some(u32::MAX);
        assert_eq!(
            slots_from_args(&args),
            Ok(1),
            "--slots overridden, at least one"
        );
        args.memory_per_task_gib = Some(-1.0);
        assert!(slots_from_args(&args).unwrap_err().contains("more than 0"));
    }

    #[test]
    fn this_machine_has_at_least_one_slot() {
        let size = TaskSize {
            vcpus: 1,
            memory_gib: None,
        };
        let (slots, _) = slots_here(&size).expect("processors are countable here");
        let cpus = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(slots, cpus);
    }
}
