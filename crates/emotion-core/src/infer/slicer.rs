//! Cutting a recording into overlapping windows as its samples arrive, in any chunk sizes: the same
//! windows whether the samples come from a file, memory or a live stream.

/// One window: where it starts and ends in the recording (frames at the recording's rate) and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub samples: Vec<f32>,
}

/// Windows of `window` frames every `hop` frames from the start; at the end, one window aligned to the
/// recording's end covers a tail the last full window missed, and a recording shorter than one window
/// is one window of its own length. Holds at most one window of samples.
#[derive(Debug)]
pub struct Slicer {
    window: usize,
    hop: usize,
    /// Samples from frame `held_from` on.
    held: Vec<f32>,
    held_from: u64,
    /// Start of the next full window.
    next_start: u64,
    /// Frames pushed so far.
    total: u64,
    /// Samples of the last `window` frames, kept for the end-aligned tail window.
    tail: Vec<f32>,
    emitted_end: u64,
}

impl Slicer {
    /// `window` and `hop` in frames; `hop` is at least one frame and at most `window`.
    pub fn new(window: usize, hop: usize) -> Slicer {
        let window = window.max(1);
        Slicer {
            window,
            hop: hop.clamp(1, window),
            held: Vec::new(),
            held_from: 0,
            next_start: 0,
            total: 0,
            tail: Vec::new(),
            emitted_end: 0,
        }
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.total
    }

    /// Adds samples; returns the windows they complete.
    pub fn push(&mut self, chunk: &[f32]) -> Vec<Window> {
        self.held.extend_from_slice(chunk);
        self.total += chunk.len() as u64;
        self.keep_tail(chunk);
        let mut out = Vec::new();
        while self.next_start + self.window as u64 <= self.total {
            let from = (self.next_start - self.held_from) as usize;
            let end = self.next_start + self.window as u64;
            out.push(Window { start: self.next_start, end, samples: self.held[from..from + self.window].to_vec() });
            self.emitted_end = end;
            self.next_start += self.hop as u64;
        }
        // Drop what no later window reads.
        let drop = (self.next_start.min(self.total) - self.held_from) as usize;
        if drop > 0 {
            self.held.drain(..drop);
            self.held_from += drop as u64;
        }
        out
    }

    fn keep_tail(&mut self, chunk: &[f32]) {
        if chunk.len() >= self.window {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - self.window..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(self.window);
            self.tail.drain(..excess);
        }
    }

    /// The last window at the end of the recording, if the windows so far do not reach it.
    pub fn finish(&mut self) -> Option<Window> {
        if self.total == 0 || self.emitted_end == self.total {
            return None;
        }
        let start = self.total - self.tail.len() as u64;
        self.emitted_end = self.total;
        Some(Window { start, end: self.total, samples: std::mem::take(&mut self.tail) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(slicer: &mut Slicer, signal: &[f32], chunks: &[usize]) -> Vec<Window> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < signal.len() {
            let n = chunks[i % chunks.len()].min(signal.len() - at);
            out.extend(slicer.push(&signal[at..at + n]));
            at += n;
            i += 1;
        }
        out.extend(slicer.finish());
        out
    }

    #[test]
    fn windows_do_not_depend_on_chunk_sizes() {
        let signal: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let whole = all(&mut Slicer::new(300, 150), &signal, &[1000]);
        for chunks in [&[1][..], &[7, 13, 400], &[299, 301], &[150]] {
            assert_eq!(all(&mut Slicer::new(300, 150), &signal, chunks), whole, "{chunks:?}");
        }
        let spans: Vec<(u64, u64)> = whole.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(spans, [(0, 300), (150, 450), (300, 600), (450, 750), (600, 900), (700, 1000)]);
        assert!(whole.iter().all(|w| w.samples[0] == w.start as f32 && w.samples.len() == 300));
    }

    #[test]
    fn a_short_recording_is_one_window_of_its_length_and_an_exact_fit_has_no_tail() {
        assert_eq!(all(&mut Slicer::new(300, 150), &[1.0; 120], &[50]).len(), 1);
        assert_eq!(all(&mut Slicer::new(300, 150), &[1.0; 120], &[50])[0].end, 120);
        let spans: Vec<_> = all(&mut Slicer::new(300, 150), &[0.0; 600], &[64]).iter().map(|w| w.end).collect();
        assert_eq!(spans, [300, 450, 600]);
        assert!(Slicer::new(300, 150).finish().is_none());
    }
}
