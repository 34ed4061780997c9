//! Plain TCP byte relay: the cost of one extra hop, nothing else.
//! Usage: bench-relay LISTEN_ADDR UPSTREAM_ADDR [--one-thread]
//! `--one-thread`: a current-thread runtime, the floor for pgtenant's
//! `workers = 1` rows (one event loop, like PgBouncer's).
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (listen, upstream) = (args.next().expect("listen addr"), args.next().expect("upstream addr"));
    let mut rt = match args.next().as_deref() {
        Some("--one-thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}
