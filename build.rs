// Embedded migrations are read at compile time; rebuild when a migration file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
