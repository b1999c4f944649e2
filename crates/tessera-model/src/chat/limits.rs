//! Bounds on rendering a chat template. A template is code that comes with a
//! model file from the internet: one that loops forever, recurses without end
//! or writes gigabytes must fail the request it renders, not take the server
//! down with it.

use std::io;

use minijinja::{Environment, ErrorKind, Template, Value};

use crate::error::{ModelError, Result};

/// Template instructions one render may run. Real chat templates take a few
/// hundred per message, so this leaves room for conversations of thousands of
/// messages while stopping a runaway loop within a second or so.
pub const MAX_FUEL: u64 = 20_000_000;

/// How deep macro calls, includes and recursive loops may nest. Real chat
/// templates nest a few levels; a recursive macro without a base case stops here.
pub const MAX_RECURSION: usize = 64;

/// Most bytes one render may write. A prompt is cut to the model's context
/// anyway; this only stops a template from building an unbounded string.
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// Sets the fuel and recursion limits on `env`.
pub(super) fn apply(env: &mut Environment<'_>) {
    env.set_fuel(Some(MAX_FUEL));
    env.set_recursion_limit(MAX_RECURSION);
}

/// Renders `template` with `ctx`, stopping once its output passes
/// [`MAX_OUTPUT_BYTES`]. `render_error` turns other render errors into the
/// crate's.
pub(super) fn render(
    template: &Template<'_, '_>,
    ctx: Value,
    render_error: impl FnOnce(minijinja::Error) -> ModelError,
) -> Result<String> {
    let mut out = Capped {
        buf: Vec::new(),
        cap: MAX_OUTPUT_BYTES,
        over: false,
    };
    let result = template.render_captured_to(ctx, &mut out);
    if out.over {
        return Err(ModelError::Template(format!(
            "the chat template wrote more than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    match result {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::OutOfFuel => {
            return Err(ModelError::Template(format!(
                "the chat template ran more than {MAX_FUEL} instructions (it may loop without end)"
            )))
        }
        Err(e) => return Err(render_error(e)),
    }
    String::from_utf8(out.buf)
        .map_err(|_| ModelError::Template("the chat template wrote invalid UTF-8".into()))
}

/// A buffer that refuses writes past `cap`.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.over = true;
            return Err(io::Error::other("chat template output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChatMessage, ChatTemplate};

    fn render_err(source: &str) -> String {
        let template = ChatTemplate::new(source, None, None).expect("compiles");
        match template.render(&[ChatMessage::user("hi")], true) {
            Ok(out) => panic!("rendered {} bytes", out.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let e = render_err(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        );
        assert!(e.contains("instructions"), "{e}");
    }

    #[test]
    fn endless_recursion_stops_at_the_limit() {
        let e = render_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(e.contains("recursion"), "{e}");
    }

    #[test]
    fn an_exploding_output_is_cut_off() {
        let e = render_err("{% for i in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}");
        assert!(e.contains("wrote more than"), "{e}");
    }

    #[test]
    fn ordinary_templates_render_as_before() {
        let template = ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
            None,
            None,
        )
        .expect("compiles");
        let many: Vec<ChatMessage> = (0..2000)
            .map(|i| ChatMessage::user(i.to_string()))
            .collect();
        let out = template.render(&many, false).expect("renders");
        assert!(
            out.starts_with("<user>0<user>1") && out.ends_with("<user>1999"),
            "{out}"
        );
    }
}
