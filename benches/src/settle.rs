//! The state every timed step that writes gigabytes starts from, whichever side and whichever
//! place in the round it has (backup and seed suites).

/// Puts the machine in the same state before a timed step that writes a lot: `bytes`, about
/// what the step will write; `scratch_dir`, on the file system it writes to.
///
/// First the page cache's dirty data is written out, so no step pays for the writeback the
/// steps before left behind: at scale 200 a restore leaves 3 GB of it, and the first restore
/// of a run, right after the database was loaded and dumped, took up to twice as long as the
/// others.
///
/// Then a scratch file of `bytes` is written and deleted (and
/// the writes dropped again by a second `sync`), so the page frames the step will fill are
/// ones the machine has just used. On a virtual machine whose host takes freed memory back
/// (a balloon with free page reporting, as here), the first few gigabytes written after a
/// pause cost ten times the system time of the same write right after another one: `dd` of
/// 3 GB took 6.4 s cold and 0.64 s warm. Without this, the first restore of each round paid
/// it, pgBackRest's as much as pgops's (10.9 s and 7.3 s first, 6.3 s and 5.6 s second at
/// scale 200), and with the order alternating over an odd number of rounds, the side that went
/// first more often had its median on a cold round. In the seed suite, without either, the
/// side that loaded first in a round, right after the previous side's gigabyte of dirty table
/// and index, measured lowest (0.74 of the limit's speed at scale 5 where the others measured
/// 0.89 and 0.99).
pub(crate) fn settle(scratch_dir: &std::path::Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    nix::unistd::sync();
    let path = scratch_dir.join("settle.scratch");
    {
        let mut file = std::fs::File::create(&path)?;
        let block = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < bytes {
            file.write_all(&block)?;
            written += block.len() as u64;
        }
    }
    std::fs::remove_file(&path)?;
    nix::unistd::sync();
    Ok(())
}
