//! Server-sent events: `data: {json}` per chunk and `data: [DONE]` at the end.

use axum::response::sse::Event;
use serde::Serialize;
use tessera_engine::request::RequestOutput;

use crate::error::ApiError;
use crate::openai::UsageBody;
use crate::outputs::Outputs;

/// A `data:` event holding `value` as JSON.
pub fn data_event(value: &impl Serialize) -> Event {
    match serde_json::to_string(value) {
        Ok(json) => Event::default().data(json),
        Err(e) => error_event(&ApiError::internal(format!("serializing a chunk: {e}"))),
    }
}

/// An OpenAI-shaped error inside a stream (the status line was already sent).
pub fn error_event(error: &ApiError) -> Event {
    tracing::error!("{}", error.message);
    Event::default().data(error.to_json())
}

/// The stream's terminator.
pub fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// The next step of a streamed response, after what every endpoint does alike.
pub enum StreamStep {
    /// Choice `index` produced `output`; its usage is already counted.
    Output(usize, Box<RequestOutput>),
    /// Events to send as they are: an error event, or the stream's end.
    Events(Vec<Event>),
}

/// Waits for the next engine output and adds its usage to `usage`. At the
/// end, sets `finished` and gives the usage chunk (`usage_chunk`, when the
/// client asked for usage) and `[DONE]`; an engine error becomes an error event.
pub async fn next_step(
    outputs: &mut Outputs,
    usage: &mut UsageBody,
    finished: &mut bool,
    usage_chunk: Option<impl FnOnce(UsageBody) -> Event>,
) -> StreamStep {
    match outputs.next().await {
        None => {
            *finished = true;
            let mut events: Vec<Event> =
                usage_chunk.map(|chunk| chunk(*usage)).into_iter().collect();
            events.push(done_event());
            StreamStep::Events(events)
        }
        Some(Err(e)) => StreamStep::Events(vec![error_event(&e)]),
        Some(Ok((index, out))) => {
            if let Some(u) = &out.usage {
                usage.add(u);
            }
            StreamStep::Output(index, Box::new(out))
        }
    }
}
