//! Image preprocessing exactly as llama.cpp's `mtmd-image.cpp` does it: decoding to RGB,
//! its Pillow-compatible fixed-point resampling (bilinear, bicubic, Lanczos), the sizing
//! rules of each projector family, tiling, and normalisation. Integer arithmetic
//! throughout the resize, so our pixels equal llama.cpp's.

use super::tower::{Projector, VisionConfig};

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    #[error("the image format is not supported (send PNG, JPEG or WebP)")]
    Format,
    #[error(
        "the image is {width}x{height}; each side must be at least 1 and at most 16384 pixels"
    )]
    Size { width: usize, height: usize },
}

/// Longest side an image may have before it is even decoded in full.
const MAX_SIDE: usize = 16384;

impl Rgb {
    /// Decodes PNG, JPEG or WebP bytes (alpha dropped, as stb_image's 3-channel load does).
    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        use image::ImageFormat;
        let format = image::guess_format(bytes).map_err(|_| ImageError::Format)?;
        if !matches!(
            format,
            ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP
        ) {
            return Err(ImageError::Format);
        }
        let reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        let (w, h) = reader
            .into_dimensions()
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        let (width, height) = (w as usize, h as usize);
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(ImageError::Size { width, height });
        }
        let img = image::load_from_memory_with_format(bytes, format)
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        Ok(Self {
            width,
            height,
            data: img.to_rgb8().into_raw(),
        })
    }

    /// A solid image (padding canvases).
    fn filled(width: usize, height: usize, color: [u8; 3]) -> Self {
        Self {
            width,
            height,
            data: color.repeat(width * height),
        }
    }

    fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            data.extend_from_slice(&self.data[(row * self.width + x) * 3..][..w * 3]);
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }
}

/// Resampling filters, as llama.cpp names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
    Lanczos,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    let sinc = |v: f64| {
                        if v == 0.0 {
                            1.0
                        } else {
                            let pv = v * std::f64::consts::PI;
                            pv.sin() / pv
                        }
                    };
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Bicubic => {
                let x = x.abs();
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's per-output-pixel filter taps for one axis: (first input index, taps) and the
/// fixed-point weights, `ksize` per output pixel.
fn taps(filter: Filter, in_size: usize, out_size: usize) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let fxp = (1u64 << PRECISION_BITS) as f64;
    let mut pre = vec![0.0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, p) in pre.iter_mut().enumerate().take(xmax) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *p = w;
            ww += w;
        }
        for (x, p) in pre.iter_mut().enumerate() {
            let w = if x < xmax && ww != 0.0 {
                *p / ww
            } else if x < xmax {
                *p
            } else {
                0.0
            };
            let rounded = w * fxp + if w < 0.0 { -0.5 } else { 0.5 };
            weights[xx * ksize + x] = rounded as i32;
        }
        bounds.push((xmin, xmax));
    }
    (bounds, weights, ksize)
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(src: &Rgb, out_w: usize, filter: Filter) -> Rgb {
    let (bounds, weights, ksize) = taps(filter, src.width, out_w);
    let mut data = vec![0u8; out_w * src.height * 3];
    for y in 0..src.height {
        let row = &src.data[y * src.width * 3..][..src.width * 3];
        for (xx, &(xmin, xcnt)) in bounds.iter().enumerate() {
            let k = &weights[xx * ksize..][..xcnt];
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &w) in k.iter().enumerate() {
                let p = &row[(xmin + x) * 3..][..3];
                for c in 0..3 {
                    ss[c] = ss[c].wrapping_add(i32::from(p[c]).wrapping_mul(w));
                }
            }
            for c in 0..3 {
                data[(y * out_w + xx) * 3 + c] = clip8(ss[c]);
            }
        }
    }
    Rgb {
        width: out_w,
        height: src.height,
        data,
    }
}

fn vertical(src: &Rgb, out_h: usize, filter: Filter) -> Rgb {
    let (bounds, weights, ksize) = taps(filter, src.height, out_h);
    let row_len = src.width * 3;
    let mut data = vec![0u8; row_len * out_h];
    let mut acc = vec![0i32; row_len];
    for (yy, &(ymin, ycnt)) in bounds.iter().enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (y, &w) in weights[yy * ksize..][..ycnt].iter().enumerate() {
            let row = &src.data[(ymin + y) * row_len..][..row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
            }
        }
        for (d, &a) in data[yy * row_len..][..row_len].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    Rgb {
        width: src.width,
        height: out_h,
        data,
    }
}

/// Pillow's two-pass resample (horizontal first), as llama.cpp's `resize_pillow`.
pub fn resize(src: &Rgb, width: usize, height: usize, filter: Filter) -> Rgb {
    let h = if width != src.width {
        horizontal(src, width, filter)
    } else {
        src.clone()
    };
    if height != src.height {
        vertical(&h, height, filter)
    } else {
        h
    }
}

/// Resizes into a `width` x `height` canvas keeping the aspect ratio, centred on black
/// (llama.cpp's `PAD_CEIL`).
fn resize_padded(src: &Rgb, width: usize, height: usize, filter: Filter) -> Rgb {
    if (src.width, src.height) == (width, height) {
        return src.clone();
    }
    let scale = (width as f32 / src.width as f32).min(height as f32 / src.height as f32);
    let nw = ((src.width as f32 * scale).ceil() as usize).min(width);
    let nh = ((src.height as f32 * scale).ceil() as usize).min(height);
    let inner = resize(src, nw, nh, filter);
    let mut out = Rgb::filled(width, height, [0, 0, 0]);
    let (ox, oy) = ((width - nw) / 2, (height - nh) / 2);
    for y in 0..nh {
        let from = &inner.data[y * nw * 3..][..nw * 3];
        out.data[((y + oy) * width + ox) * 3..][..nw * 3].copy_from_slice(from);
    }
    out
}

/// llama.cpp's `calc_size_preserved_ratio` ("smart_resize") without a longest edge: each
/// side rounded to a multiple of `align`, then scaled into the pixel budget.
pub fn smart_size(
    width: usize,
    height: usize,
    align: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> (usize, usize) {
    let f = align as f32;
    let round = |x: f32| ((x / f).round() as usize) * align;
    let ceil = |x: f32| ((x / f).ceil() as usize) * align;
    let floor = |x: f32| ((x / f).floor() as usize) * align;
    let (w, h) = (width as f32, height as f32);
    let mut wb = align.max(round(w));
    let mut hb = align.max(round(h));
    if wb * hb > max_pixels {
        let beta = (h * w / max_pixels as f32).sqrt();
        hb = align.max(floor(h / beta));
        wb = align.max(floor(w / beta));
    } else if wb * hb < min_pixels {
        let beta = (min_pixels as f32 / (h * w)).sqrt();
        hb = ceil(h * beta);
        wb = ceil(w * beta);
    }
    (wb, hb)
}

/// An image ready for the encoder: normalised f32 pixels, planar (channel, row, column).
#[derive(Debug, Clone)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

fn normalise(img: &Rgb, c: &VisionConfig) -> Planar {
    let n = img.width * img.height;
    let mut data = vec![0.0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            let v = f32::from(px[ch]) / 255.0;
            data[ch * n + i] = (v - c.mean[ch]) / c.std[ch];
        }
    }
    Planar {
        width: img.width,
        height: img.height,
        data,
    }
}

/// The sizes of what an image becomes, known from its dimensions alone (the front sizes
/// prompts with it; the worker makes the pixels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageShape {
    /// Each encoder input's width and height, in the order their rows enter the prompt.
    pub inputs: Vec<(usize, usize)>,
    /// Tiles per row and per column (idefics3); the overview is the last input.
    pub tiles: Option<(usize, usize)>,
}

/// The resize filter of each family, as llama.cpp sets it.
fn filter(c: &VisionConfig) -> Filter {
    match c.projector {
        Projector::Qwen3Vl => Filter::Bicubic,
        Projector::Idefics3 => Filter::Lanczos,
    }
}

/// `width` x `height` scaled (keeping the aspect ratio) so that no side exceeds `max_side`.
pub fn capped(width: usize, height: usize, max_side: usize) -> (usize, usize) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = |v: usize| ((v * max_side + longest / 2) / longest).max(1);
    (scale(width), scale(height))
}

/// An image no larger than `max_side` on either side, downscaled with the tower's filter.
pub fn cap(img: Rgb, max_side: usize, c: &VisionConfig) -> Rgb {
    let (w, h) = capped(img.width, img.height, max_side);
    if (w, h) == (img.width, img.height) {
        return img;
    }
    resize(&img, w, h, filter(c))
}

/// idefics3's first resize: the longest edge to `longest_edge`, the other side even.
fn idefics3_resized(width: usize, height: usize, edge: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (rw, rh) = if width >= height {
        let h = (edge as f64 / aspect) as usize;
        (edge, h + h % 2)
    } else {
        let w = (edge as f64 * aspect) as usize;
        (w + w % 2, edge)
    };
    (rw.max(1), rh.max(1))
}

/// What an image of `width` x `height` becomes for the tower configured by `c`.
pub fn shape(width: usize, height: usize, c: &VisionConfig) -> ImageShape {
    match c.projector {
        Projector::Qwen3Vl => ImageShape {
            inputs: vec![smart_size(
                width,
                height,
                c.patch_size * c.merge,
                c.min_pixels,
                c.max_pixels,
            )],
            tiles: None,
        },
        Projector::Idefics3 => {
            let tile = c.image_size;
            let (rw, rh) = idefics3_resized(width, height, c.longest_edge);
            let (gx, gy) = (rw.div_ceil(tile), rh.div_ceil(tile));
            ImageShape {
                inputs: vec![(tile, tile); gx * gy + 1],
                tiles: Some((gx, gy)),
            }
        }
    }
}

/// What one image becomes: the encoder inputs, in the order their embeddings enter the
/// prompt, and its shape.
pub struct Prepared {
    pub inputs: Vec<Planar>,
    pub shape: ImageShape,
}

/// Preprocesses `img` for the tower configured by `c`.
pub fn prepare(img: &Rgb, c: &VisionConfig) -> Prepared {
    let shape = shape(img.width, img.height, c);
    let inputs = match c.projector {
        Projector::Qwen3Vl => {
            let (w, h) = shape.inputs[0];
            vec![normalise(&resize_padded(img, w, h, filter(c)), c)]
        }
        Projector::Idefics3 => {
            let tile = c.image_size;
            let (rw, rh) = idefics3_resized(img.width, img.height, c.longest_edge);
            let (gx, gy) = shape.tiles.unwrap_or((1, 1));
            let resized = resize(img, rw, rh, filter(c));
            let refined = resize(&resized, gx * tile, gy * tile, filter(c));
            let overview = resize(&refined, tile, tile, filter(c));
            let mut inputs = Vec::with_capacity(gx * gy + 1);
            for y in 0..gy {
                for x in 0..gx {
                    inputs.push(normalise(&refined.crop(x * tile, y * tile, tile, tile), c));
                }
            }
            inputs.push(normalise(&overview, c));
            inputs
        }
    };
    Prepared { inputs, shape }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_size_rounds_and_budgets_like_llama_cpp() {
        // 1280x720 with factor 32: 1280 stays, 720 / 32 = 22.5 rounds away from zero to 23.
        assert_eq!(smart_size(1280, 720, 32, 8192, 4096 * 1024), (1280, 736));
        // Too few pixels: scaled up to the minimum.
        assert_eq!(smart_size(64, 64, 32, 8 * 1024, 4096 * 1024), (96, 96));
    }

    #[test]
    fn resizing_to_the_same_size_is_a_copy_and_a_solid_image_stays_solid() {
        let img = Rgb::filled(7, 5, [10, 200, 30]);
        assert_eq!(resize(&img, 7, 5, Filter::Bicubic), img);
        for f in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            let r = resize(&img, 13, 3, f);
            assert!(r.data.chunks(3).all(|p| p == [10, 200, 30]), "{f:?}");
        }
    }
}
