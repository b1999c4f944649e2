//! Stop strings: find them in the generated text, and hold back the text that
//! could still turn into one so it is never streamed and then taken back.

/// A request's stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    longest: usize,
}

impl StopStrings {
    /// Watches for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Self { stops, longest }
    }

    /// Whether there is anything to watch for.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// The earliest stop string in `text` that ends at or after byte `new_from`
    /// (text before it was already checked): its start and the string.
    pub fn find(&self, text: &str, new_from: usize) -> Option<(usize, &str)> {
        let mut from = new_from.saturating_sub(self.longest.saturating_sub(1));
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        self.stops
            .iter()
            .filter_map(|s| {
                text[from..]
                    .find(s.as_str())
                    .map(|i| (from + i, s.as_str()))
            })
            .min_by_key(|&(at, _)| at)
    }

    /// Bytes at the end of `text` that are a proper prefix of some stop string:
    /// they must not be streamed yet.
    pub fn held_back(&self, text: &str) -> usize {
        let mut held = 0;
        for stop in &self.stops {
            for (cut, _) in stop.char_indices().skip(1) {
                if cut > held && text.ends_with(&stop[..cut]) {
                    held = cut;
                }
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> StopStrings {
        StopStrings::new(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn finds_the_earliest_stop_including_across_the_checked_boundary() {
        let s = stops(&["END", "\n\n"]);
        assert_eq!(s.find("abc EN", 0), None);
        // "END" straddles what was checked before ("abc EN") and the new "D".
        assert_eq!(s.find("abc END more", 6), Some((4, "END")));
        assert_eq!(s.find("a\n\nb END", 0), Some((1, "\n\n")));
    }

    #[test]
    fn holds_back_a_possible_stop_prefix() {
        let s = stops(&["</answer>", "ü!"]);
        assert_eq!(s.held_back("the answer</an"), 4);
        assert_eq!(s.held_back("the answer"), 0);
        // Prefixes end on character boundaries: "ü" is two bytes.
        assert_eq!(s.held_back("grün ü"), 2);
    }

    #[test]
    fn the_search_start_snaps_to_a_character_boundary() {
        let s = stops(&["xyz"]);
        assert_eq!(s.find("ééxyz", 3), Some((4, "xyz")));
    }
}
