//! The `rangecache` binary: `rangecache serve [--config FILE] [--listen ADDR]`.

fn main() {
    println!("rangecache");
}
