// Migrations are embedded by refinery's macro: rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
