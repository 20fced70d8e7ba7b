//! Fuzz target `front_end`: any UTF-8 input goes through the whole front end (`compile`), then
//! `parse` → `format` → `parse` again. Nothing may panic; every diagnostic's labels lie inside
//! the input; an input that parses must format to text that parses to the same tree, formats to
//! itself and keeps every comment (`fmt::format_checked`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use recipe_compiler::diag::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::new("fuzz.recipe", text);
    let _ = recipe_compiler::compile(&source, &[]);
    match recipe_compiler::parse(&source) {
        Ok(module) => {
            if let Err(why) = recipe_compiler::fmt::format_checked(&module, &source) {
                panic!("formatter contract broken: {why}");
            }
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "parse failed without a diagnostic");
            for d in &diagnostics {
                for label in &d.labels {
                    assert!(
                        label.span.start <= label.span.end,
                        "{}: inverted span",
                        d.code
                    );
                    assert!(
                        label.span.end as usize <= text.len(),
                        "{}: span past the end",
                        d.code
                    );
                }
            }
        }
    }
});
