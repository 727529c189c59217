//! A small raster canvas for the charts the tools write (bars, lines, labels), with a built-in
//! 3×5 pixel font, so that a PNG report needs no font file or plotting library.

use crate::augment::Rgb8;

pub type Colour = [u8; 3];

pub const BLACK: Colour = [0, 0, 0];
pub const GREY: Colour = [200, 200, 200];
/// Distinct line colours (colour-blind-safe palette).
pub const PALETTE: [Colour; 8] = [[0, 114, 178], [230, 159, 0], [0, 158, 115], [204, 121, 167], [86, 180, 233], [213, 94, 0], [240, 228, 66], [0, 0, 0]];

/// Rows of a glyph, 3 bits each (bit 2 = left column).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_lowercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'a' => [2, 5, 7, 5, 5],
        'b' => [6, 5, 6, 5, 6],
        'c' => [3, 4, 4, 4, 3],
        'd' => [6, 5, 5, 5, 6],
        'e' => [7, 4, 6, 4, 7],
        'f' => [7, 4, 6, 4, 4],
        'g' => [3, 4, 5, 5, 3],
        'h' => [5, 5, 7, 5, 5],
        'i' => [7, 2, 2, 2, 7],
        'j' => [1, 1, 1, 5, 2],
        'k' => [5, 5, 6, 5, 5],
        'l' => [4, 4, 4, 4, 7],
        'm' => [5, 7, 7, 5, 5],
        'n' => [6, 5, 5, 5, 5],
        'o' => [2, 5, 5, 5, 2],
        'p' => [6, 5, 6, 4, 4],
        'q' => [2, 5, 5, 6, 3],
        'r' => [6, 5, 6, 5, 5],
        's' => [3, 4, 2, 1, 6],
        't' => [7, 2, 2, 2, 2],
        'u' => [5, 5, 5, 5, 7],
        'v' => [5, 5, 5, 5, 2],
        'w' => [5, 5, 7, 7, 5],
        'x' => [5, 5, 2, 5, 5],
        'y' => [5, 5, 2, 2, 2],
        'z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '_' => [0, 0, 0, 0, 7],
        '=' => [0, 7, 0, 7, 0],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '[' => [3, 2, 2, 2, 3],
        ']' => [6, 2, 2, 2, 6],
        '<' => [1, 2, 4, 2, 1],
        '>' => [4, 2, 1, 2, 4],
        '*' => [0, 5, 2, 5, 0],
        '#' => [5, 7, 5, 7, 5],
        '\'' => [2, 2, 0, 0, 0],
        '|' => [2, 2, 2, 2, 2],
        ' ' => [0; 5],
        _ => [7, 7, 7, 7, 7],
    }
}

/// An RGB canvas, white at first.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    data: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height, data: vec![255; width * height * 3] }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Colour) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Colour) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// A line of width `thick` pixels (Bresenham).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Colour, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(x - thick / 2, y - thick / 2, thick, thick, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Width in pixels of `s` at `scale`.
    pub fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 4 * scale
    }

    /// Draw `s` with its top-left corner at (x, y), each font pixel `scale`×`scale`.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Colour) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.rect(x + (k as i64 * 4 + col) * scale, y + row as i64 * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    pub fn into_image(self) -> Rgb8 {
        Rgb8 { width: self.width, height: self.height, data: self.data }
    }
}

/// Plot `ys` against `xs` inside the box (x, y, w, h), scaled to (x range, `y_range`).
pub fn polyline(canvas: &mut Canvas, frame: (i64, i64, i64, i64), xs: &[f64], ys: &[f64], y_range: (f64, f64), c: Colour) {
    let (x, y, w, h) = frame;
    let (x0, x1) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
    let sx = |v: f64| x + ((v - x0) / (x1 - x0).max(1e-12) * (w - 1) as f64).round() as i64;
    let sy = |v: f64| y + h - 1 - ((v - y_range.0) / (y_range.1 - y_range.0).max(1e-12) * (h - 1) as f64).round() as i64;
    let pts: Vec<(i64, i64)> = xs.iter().zip(ys).filter(|(_, v)| v.is_finite()).map(|(&a, &b)| (sx(a), sy(b))).collect();
    for pair in pts.windows(2) {
        canvas.line(pair[0], pair[1], c, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_lines_land_where_asked() {
        let mut c = Canvas::new(40, 20);
        c.text(1, 1, "1", 2, BLACK);
        // '1' row 0 is 010: the middle column, at x = 1 + 2..4, y = 1..3.
        let img = c.into_image();
        let px = |x: usize, y: usize| img.data[(y * 40 + x) * 3];
        assert_eq!(px(3, 1), 0);
        assert_eq!(px(1, 1), 255);
        let mut c = Canvas::new(10, 10);
        c.line((0, 0), (9, 9), BLACK, 1);
        let img = c.into_image();
        assert!((0..10).all(|i| img.data[(i * 10 + i) * 3] == 0));
        assert_eq!(Canvas::text_width("abc", 2), 24);
    }
}
