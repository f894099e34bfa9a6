#![allow(missing_docs, clippy::print_stdout)]
use ringtide::wal::{SyncPolicy, Wal, WalOptions};
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ringtide::Result<()> {
    let dir = std::path::Path::new("target/scratch_rec");
    if std::env::args().nth(1).as_deref() == Some("write") {
        let _ = std::fs::remove_dir_all(dir);
        let wal = Wal::open(dir, WalOptions::default().sync_policy(SyncPolicy::None)).await?;
        let data = bytes::Bytes::from(vec![1u8; 256]);
        for _ in 0..1049 {
            wal.append_batch(std::iter::repeat_n(data.clone(), 1000))
                .await?;
        }
        wal.close().await?;
        return Ok(());
    }
    let t = Instant::now();
    let wal = Wal::open(dir, WalOptions::default().sync_policy(SyncPolicy::None)).await?;
    let el = t.elapsed();
    println!(
        "recovery: {:.3} s, {:.0} MiB/s",
        el.as_secs_f64(),
        256.0 / el.as_secs_f64()
    );
    wal.close().await?;
    Ok(())
}
