//! Fuzz target `definitions`: arbitrary bytes through `rdg::fuzzing::definitions` (see
//! that function for the surface and the property checked).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rdg::fuzzing::definitions(data);
    });
}
