//! Rebuild when a migration is added or edited: they are embedded into the binary (`embed_migrations!`),
//! and cargo does not otherwise notice a new directory under `migrations/`.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
