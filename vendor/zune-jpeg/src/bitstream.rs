/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

#![allow(
    clippy::if_not_else,
    clippy::similar_names,
    clippy::inline_always,
    clippy::doc_markdown,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)]

//! This file exposes a single struct that can decode a huffman encoded
//! Bitstream in a JPEG file
//!
//! This code is optimized for speed.
//! It's meant to be super duper super fast, because everyone else depends on this being fast.
//! It's (annoyingly) serial hence we cant use parallel bitstreams(it's variable length coding.)
//!
//! Furthermore, on the case of refills, we have to do bytewise processing because the standard decided
//! that we want to support markers in the middle of streams(seriously few people use RST markers).
//!
//! So we pull in all optimization steps:
//! - use `inline[always]`? ✅ ,
//! - pre-execute most common cases ✅,
//! - add random comments ✅
//! -  fast paths ✅.
//!
//! Speed-wise: It is probably the fastest JPEG BitStream decoder to ever sail the seven seas because of
//! a couple of optimization tricks.
//! 1. Fast refills from libjpeg-turbo
//! 2. As few as possible branches in decoder fast paths.
//! 3. Accelerated AC table decoding borrowed from stb_image.h written by Fabian Gissen (@ rygorous),
//! improved by me to handle more cases.
//! 4. Safe and extensible routines(e.g. cool ways to eliminate bounds check)
//! 5. No unsafe here
//!
//! Readability comes as a second priority(I tried with variable names this time, and we are wayy better than libjpeg).
//!
//! Anyway if you are reading this it means your cool and I hope you get whatever part of the code you are looking for
//! (or learn something cool)
//!
//! Knock yourself out.
use alloc::format;
use alloc::string::ToString;
use zune_core::log::warn;
use core::cmp::min;

use zune_core::bytestream::{ZByteReaderTrait, ZReader};

use crate::errors::DecodeErrors;
use crate::huffman::{HuffmanTable, HUFF_LOOKAHEAD};
use crate::marker::Marker;
use crate::mcu::DCT_BLOCK;
use crate::misc::UN_ZIGZAG;

macro_rules! decode_huff {
    ($stream:tt,$symbol:tt,$table:tt) => {
        let mut code_length = $symbol >> HUFF_LOOKAHEAD;

        ($symbol) &= (1 << HUFF_LOOKAHEAD) - 1;

        if code_length > i32::from(HUFF_LOOKAHEAD)
        {
            // if the symbol cannot be resolved in the first HUFF_LOOKAHEAD bits,
            // we know it lies somewhere between HUFF_LOOKAHEAD and 16 bits since jpeg imposes 16 bit
            // limit, we can therefore look 16 bits ahead and try to resolve the symbol
            // starting from 1+HUFF_LOOKAHEAD bits.
            $symbol = ($stream).peek_bits::<16>() as i32;
            // (Credits to Sean T. Barrett stb library for this optimization)
            // maxcode is pre-shifted 16 bytes long so that it has (16-code_length)
            // zeroes at the end hence we do not need to shift in the inner loop.
            while code_length < 17{
                if $symbol < $table.maxcode[code_length as usize]  {
                    break;
                }
                code_length += 1;
            }

            if code_length == 17{
                // symbol could not be decoded.
                //
                // We may think, lets fake zeroes, noo
                // panic, because Huffman codes are sensitive, probably everything
                // after this will be corrupt, so no need to continue.
                // panic!("Bad Huffman code length");
                return Err(DecodeErrors::Format(format!("Bad Huffman Code 0x{:X}, corrupt JPEG",$symbol)))
            }

            $symbol >>= (16-code_length);
            ($symbol) = i32::from(
                ($table).values
                    [(($symbol + ($table).offset[code_length as usize]) & 0xFF) as usize],
            );
        }
        if code_length> i32::from(($stream).bits_left){
            return Err(DecodeErrors::Format(format!("Code length {code_length}  more than bits left {}",($stream).bits_left)))
        }
        // drop bits read
        ($stream).drop_bits(code_length as u8);
    };
}

/// Zig-zag position of each natural-order coefficient (the inverse of `UN_ZIGZAG`).
const ZIGZAG: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut j = 0;
    while j < 64 {
        t[UN_ZIGZAG[j]] = j as u8;
        j += 1;
    }
    t
};

/// `ZIGZAG_BYTES[b][m]`: the zig-zag-order mask of the natural-order mask `m << 8 b` (eight
/// lookups permute a 64-bit mask; 16 KiB).
static ZIGZAG_BYTES: [[u64; 256]; 8] = {
    let mut t = [[0u64; 256]; 8];
    let mut b = 0;
    while b < 8 {
        let mut m = 0;
        while m < 256 {
            let mut v = 0u64;
            let mut i = 0;
            while i < 8 {
                if m & (1 << i) != 0 {
                    v |= 1 << ZIGZAG[8 * b + i];
                }
                i += 1;
            }
            t[b][m] = v;
            m += 1;
        }
        b += 1;
    }
    t
};

/// Bit i set: `block[i] != 0` (natural order).
#[inline(always)]
fn nonzero_mask(block: &[i16; 64]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use core::arch::x86_64::*;
        // Eight compares, four packs, four byte masks (SSE2 is part of x86-64).
        let mut zero = 0_u64;
        for q in 0..4 {
            // SAFETY: SSE2 is enabled (cfg above); the loads read block[16q..16q + 16].
            let eq = unsafe {
                let p = block.as_ptr().add(16 * q) as *const __m128i;
                let z = _mm_setzero_si128();
                let (a, b) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                _mm_movemask_epi8(_mm_packs_epi16(
                    _mm_cmpeq_epi16(a, z),
                    _mm_cmpeq_epi16(b, z),
                ))
            };
            zero |= u64::from(eq as u16) << (16 * q);
        }
        !zero
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let mut m = 0_u64;
        for (i, &c) in block.iter().enumerate() {
            m |= u64::from(c != 0) << i;
        }
        m
    }
}

/// Applies refinement correction bits to the nonzero coefficients at the zig-zag positions set
/// in `positions`, in increasing order, taking one bit each from the top of `bits`: a 1 moves
/// the coefficient away from zero by `bit` unless it already has that bit. Branch-free (the
/// correction bits are close to random, and upstream's branches on them mispredicted).
#[inline(always)]
fn apply_corrections(block: &mut [i16; 64], mut positions: u64, mut bits: u64, bit: i16) {
    while positions != 0 {
        let j = positions.trailing_zeros() as usize;
        positions &= positions - 1;
        let c = &mut block[UN_ZIGZAG[j] & 63];
        let one = (bits >> 63) as i16;
        bits <<= 1;
        // bit if (one and c lacks it) else 0; signed like c (c is nonzero).
        let add = bit & (one & i16::from(*c & bit == 0)).wrapping_neg();
        *c = c.wrapping_add(add.wrapping_mul((*c >> 15) | 1));
    }
}

/// masksub patch: whether this CPU has BMI1, BMI2, POPCNT and LZCNT (every x86-64 since
/// Haswell), for the scan decoders compiled with them; detected once.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) fn has_bmi2_popcnt() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("popcnt")
            && std::arch::is_x86_feature_detected!("lzcnt")
    })
}

/// Bits `lo..=hi` of a u64 (empty when `lo > hi`); `hi <= 63`.
#[inline(always)]
fn band_mask(lo: usize, hi: usize) -> u64 {
    if lo > hi {
        return 0;
    }
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// A `BitStream` struct, a bit by bit reader with super powers
///
#[rustfmt::skip]
pub(crate) struct BitStream {
    /// A MSB type buffer that is used for some certain operations
    pub buffer:              u64,
    /// A TOP  aligned MSB type buffer that is used to accelerate some operations like
    /// peek_bits and get_bits.
    ///
    /// By top aligned, I mean the top bit (63) represents the top bit in the buffer.
    aligned_buffer:          u64,
    /// Tell us the bits left the two buffer
    pub(crate) bits_left:    u8,
    /// Did we find a marker(RST/EOF) during decoding?
    pub marker:              Option<Marker>,
    /// An i16 with the bit corresponding to successive_low set to 1, others 0.
    pub successive_low_mask: i16,
    spec_start:              u8,
    spec_end:                u8,
    pub eob_run:             i32,
    pub overread_by:         usize,
    /// True if we have seen end of image marker.
    /// Don't read anything after that.
    pub seen_eoi:            bool,
}

impl BitStream {
    /// Create a new BitStream
    #[rustfmt::skip]
    pub(crate) const fn new() -> BitStream {
        BitStream {
            buffer:              0,
            aligned_buffer:      0,
            bits_left:           0,
            marker:              None,
            successive_low_mask: 1,
            spec_start:          0,
            spec_end:            0,
            eob_run:             0,
            overread_by:         0,
            seen_eoi:            false,
        }
    }

    /// Create a new Bitstream for progressive decoding
    #[allow(clippy::redundant_field_names)]
    #[rustfmt::skip]
    pub(crate) fn new_progressive(al: u8, spec_start: u8, spec_end: u8) -> BitStream {
        BitStream {
            buffer:              0,
            aligned_buffer:      0,
            bits_left:           0,
            marker:              None,
            successive_low_mask: 1i16 << al,
            spec_start:          spec_start,
            spec_end:            spec_end,
            eob_run:             0,
            overread_by:         0,
            seen_eoi:            false,
        }
    }

    /// Refill the bit buffer by (a maximum of) 32 bits
    ///
    /// # Arguments
    ///  - `reader`:`&mut BufReader<R>`: A mutable reference to an underlying
    ///    File/Memory buffer containing a valid JPEG stream
    ///
    /// This function will only refill if `self.count` is less than 32
    #[inline(always)] // to many call sites? ( perf improvement by 4%)
    pub fn refill<T>(&mut self, reader: &mut ZReader<T>) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        /// Macro version of a single byte refill.
        /// Arguments
        /// buffer-> our io buffer, because rust macros cannot get values from
        /// the surrounding environment bits_left-> number of bits left
        /// to full refill
        macro_rules! refill {
            ($buffer:expr,$byte:expr,$bits_left:expr) => {
                // read a byte from the stream
                $byte = u64::from(reader.read_u8());
                self.overread_by += usize::from(reader.eof()?);
                // append to the buffer
                // JPEG is a MSB type buffer so that means we append this
                // to the lower end (0..8) of the buffer and push the rest bits above..
                $buffer = ($buffer << 8) | $byte;
                // Increment bits left
                $bits_left += 8;
                // Check for special case  of OxFF, to see if it's a stream or a marker
                if $byte == 0xff {
                    // read next byte
                    let mut next_byte = u64::from(reader.read_u8());
                    // Byte snuffing, if we encounter byte snuff, we skip the byte
                    if next_byte != 0x00 {
                        // skip that byte we read
                        while next_byte == 0xFF {
                            next_byte = u64::from(reader.read_u8());
                        }

                        if next_byte != 0x00 {
                            // Undo the byte append and return
                            $buffer >>= 8;
                            $bits_left -= 8;

                            if $bits_left != 0 {
                                self.aligned_buffer = $buffer << (64 - $bits_left);
                            }

                            let marker = Marker::from_u8(next_byte as u8);
                            self.marker = marker;

                            if let Some(Marker::UNKNOWN(_)) = marker{
                                return Err(DecodeErrors::Format("Unknown marker in bit stream".to_string()));
                            }
                            if next_byte == 0xD9 {
                                // special handling for eoi, fill some bytes,even if its zero,
                                // removes some panics
                                self.buffer <<= 8;
                                self.bits_left += 8;
                                self.aligned_buffer = self.buffer << (64 - self.bits_left);
                            }

                            return Ok(false);
                        }
                    }
                }
            };
        }

        // 32 bits is enough for a decode(16 bits) and receive_extend(max 16 bits)
        if self.bits_left < 32 {
            if self.marker.is_some() || self.seen_eoi {
                // found a marker, or we are in EOI
                // also we are in over-reading mode, where we fill it with zeroes

                // fill with zeroes
                self.buffer <<= 32;
                self.bits_left += 32;
                self.aligned_buffer = self.buffer << (64 - self.bits_left);
                return Ok(true);
            }

            if self.overread_by > 0 {
                if self.bits_left == 0 {
                    return Err(DecodeErrors::ExhaustedData);
                }
                // We already hit EOF while refilling. Continue consuming the buffered bits
                // but don't synthesize additional bytes from zero-fill.
                return Ok(true);
            }

            // we optimize for the case where we don't have 255 in the stream and have 4 bytes left
            // as it is the common case
            //
            // so we always read 4 bytes, if read_fixed_bytes errors out, the cursor is
            // guaranteed not to advance in case of failure (is this true), so
            // we revert the read later on (if we have 255), if this fails, we use the normal
            // byte at a time read

            if let Ok(bytes) = reader.read_fixed_bytes_or_error::<4>() {
                // we have 4 bytes to spare, read the 4 bytes into a temporary buffer
                // create buffer
                let msb_buf = u32::from_be_bytes(bytes);
                // check if we have 0xff
                if !has_byte(msb_buf, 255) {
                    self.bits_left += 32;
                    self.buffer <<= 32;
                    self.buffer |= u64::from(msb_buf);
                    self.aligned_buffer = self.buffer << (64 - self.bits_left);
                    return Ok(true);
                }

                reader.rewind(4)?;
            }
            // This serves two reasons,
            // 1: Make clippy shut up
            // 2: Favour register reuse
            let mut byte;
            // 4 refills, if all succeed the stream should contain enough bits to decode a
            // value
            refill!(self.buffer, byte, self.bits_left);
            refill!(self.buffer, byte, self.bits_left);
            refill!(self.buffer, byte, self.bits_left);
            refill!(self.buffer, byte, self.bits_left);
            // Construct an MSB buffer whose top bits are the bitstream we are currently holding.
            self.aligned_buffer = self.buffer << (64 - self.bits_left);
        }
        return Ok(true);
    }
    /// Decode the DC coefficient in a MCU block.
    ///
    /// The decoded coefficient is written to `dc_prediction`
    ///
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::unwrap_used
    )]
    #[inline(always)]
    fn decode_dc<T>(
        &mut self, reader: &mut ZReader<T>, dc_table: &HuffmanTable, dc_prediction: &mut i32
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        let (mut symbol, r);

        if self.bits_left < 32 {
            self.refill(reader)?;
        };
        // look a head HUFF_LOOKAHEAD bits into the bitstream
        symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
        symbol = dc_table.lookup[symbol as usize];

        decode_huff!(self, symbol, dc_table);

        if symbol != 0 {
            r = self.get_bits(symbol as u8);
            symbol = huff_extend(r, symbol);
        }
        // Update DC prediction
        *dc_prediction = dc_prediction.wrapping_add(symbol);

        return Ok(true);
    }

    /// Like `decode_dc` but we do not need the result of the component, we only want to remove it
    /// from the bitstream of the MCU.
    fn discard_dc<T>(
        &mut self, reader: &mut ZReader<T>, dc_table: &HuffmanTable
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        let mut symbol;

        if self.bits_left < 32 {
            self.refill(reader)?;
        };
        // look a head HUFF_LOOKAHEAD bits into the bitstream
        symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
        symbol = dc_table.lookup[symbol as usize];

        decode_huff!(self, symbol, dc_table);

        if symbol != 0 {
            let _ = self.get_bits(symbol as u8);
        }

        return Ok(true);
    }

    /// Decode a Minimum Code Unit(MCU) as quickly as possible
    ///
    /// # Arguments
    /// - reader: The bitstream from where we read more bits.
    /// - dc_table: The Huffman table used to decode the DC coefficient
    /// - ac_table: The Huffman table used to decode AC values
    /// - block: A memory region where we will write out the decoded values
    /// - DC prediction: Last DC value for this component
    ///
    #[allow(
        clippy::many_single_char_names,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    #[inline(never)]
    pub fn decode_mcu_block<T>(
        &mut self, reader: &mut ZReader<T>, dc_table: &HuffmanTable, ac_table: &HuffmanTable,
        qt_table: &[i32; DCT_BLOCK], block: &mut [i32; 64], dc_prediction: &mut i32
    ) -> Result<u16, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        // Get fast AC table as a reference before we enter the hot path
        let ac_lookup = ac_table.ac_lookup.as_ref().unwrap();

        let (mut symbol, mut r, mut fast_ac);
        // Decode AC coefficients
        let mut pos: usize = 1;
        if  self.bits_left < 1 && self.marker.is_some() {
            return Err(DecodeErrors::Format(
                "No more bytes left in stream before marker".to_string()
            ));
        }
        // decode DC, dc prediction will contain the value
        self.decode_dc(reader, dc_table, dc_prediction)?;

        // set dc to be the dc prediction.
        block[0] = *dc_prediction * qt_table[0];

        while pos < 64 {
            self.refill(reader)?;
            symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
            fast_ac = ac_lookup[symbol as usize];
            symbol = ac_table.lookup[symbol as usize];

            if fast_ac != 0 {
                //  FAST AC path
                pos += ((fast_ac >> 4) & 15) as usize; // run
                let t_pos = UN_ZIGZAG[min(pos, 63)] & 63;

                block[t_pos] = i32::from(fast_ac >> 8) * (qt_table[t_pos]); // Value
                self.drop_bits((fast_ac & 15) as u8);
                pos += 1;
            } else {
                decode_huff!(self, symbol, ac_table);

                r = symbol >> 4;
                symbol &= 15;

                if symbol != 0 {
                    pos += r as usize;
                    r = self.get_bits(symbol as u8);
                    symbol = huff_extend(r, symbol);
                    let t_pos = UN_ZIGZAG[pos & 63] & 63;

                    block[t_pos] = symbol * qt_table[t_pos];

                    pos += 1;
                } else if r != 15 {
                    return Ok(pos as u16);
                } else {
                    pos += 16;
                }
            }
        }

        return Ok(64);
    }

    /// Advance the bitstream over a block but ignore the data contained.
    ///
    /// This updates DC prediction but we never dequantize and we never do any Zig-Zag translation
    /// either. Still returns the index of the last component read.
    pub fn discard_mcu_block<T>(
        &mut self, reader: &mut ZReader<T>, dc_table: &HuffmanTable, ac_table: &HuffmanTable
    ) -> Result<u16, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        // Get fast AC table as a reference before we enter the hot path
        let ac_lookup = ac_table.ac_lookup.as_ref().unwrap();

        let (mut symbol, mut r, mut fast_ac);
        // Decode AC coefficients
        let mut pos: usize = 1;

        // decode DC, dc prediction will contain the value
        self.discard_dc(reader, dc_table)?;

        while pos < 64 {
            self.refill(reader)?;
            symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
            fast_ac = ac_lookup[symbol as usize];
            symbol = ac_table.lookup[symbol as usize];

            if fast_ac != 0 {
                //  FAST AC path
                pos += ((fast_ac >> 4) & 15) as usize; // run

                self.drop_bits((fast_ac & 15) as u8);
                pos += 1;
            } else {
                decode_huff!(self, symbol, ac_table);

                r = symbol >> 4;
                symbol &= 15;

                if symbol != 0 {
                    pos += r as usize;
                    // Advance over bits but ignore.
                    let _ = self.get_bits(symbol as u8);

                    pos += 1;
                } else if r != 15 {
                    return Ok(pos as u16);
                } else {
                    pos += 16;
                }
            }
        }

        return Ok(64);
    }

    /// Peek `look_ahead` bits ahead without discarding them from the buffer
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)]
    const fn peek_bits<const LOOKAHEAD: u8>(&self) -> i32 {
        (self.aligned_buffer >> (64 - LOOKAHEAD)) as i32
    }

    /// Discard the next `N` bits without checking
    #[inline(always)]
    fn drop_bits(&mut self, n: u8) {
        // PS: Its a good check, but triggers fuzzer and a lot of false positives
        //debug_assert!(self.bits_left >= n);
        //self.bits_left -= n;
        self.bits_left = self.bits_left.saturating_sub(n);
        self.aligned_buffer <<= n;
    }

    /// Read `n_bits` from the buffer  and discard them
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)]
    fn get_bits(&mut self, n_bits: u8) -> i32 {
        let mask = (1_u64 << n_bits) - 1;

        self.aligned_buffer = self.aligned_buffer.rotate_left(u32::from(n_bits));
        let bits = (self.aligned_buffer & mask) as i32;
        self.bits_left = self.bits_left.wrapping_sub(n_bits);
        bits
    }

    /// Decode a DC block
    #[allow(clippy::cast_possible_truncation)]
    #[inline(always)]
    pub(crate) fn decode_prog_dc_first<T>(
        &mut self, reader: &mut ZReader<T>, dc_table: &HuffmanTable, block: &mut i16,
        dc_prediction: &mut i32
    ) -> Result<(), DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        self.decode_dc(reader, dc_table, dc_prediction)?;
        *block = (*dc_prediction as i16).wrapping_mul(self.successive_low_mask);
        return Ok(());
    }
    #[inline(always)]
    pub(crate) fn decode_prog_dc_refine<T>(
        &mut self, reader: &mut ZReader<T>, block: &mut i16
    ) -> Result<(), DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        // refinement scan
        if self.bits_left < 1 {
            self.refill(reader)?;
            // if we find a marker, it may happens we don't refill.
            // So let's confirm again that refill worked
            if self.bits_left < 1 {
                return Err(DecodeErrors::Format(
                    "Marker found where not expected in refine bit".to_string()
                ));
            }
        }

        if self.get_bit() == 1 {
            *block = block.wrapping_add(self.successive_low_mask);
        }

        Ok(())
    }

    /// Get a single bit from the bitstream
    #[inline(always)]
    fn get_bit(&mut self) -> u8 {
        let k = (self.aligned_buffer >> 63) as u8;
        // discard a bit
        self.drop_bits(1);
        return k;
    }
    /// masksub patch: the AC decoders of progressive scans, each also compiled with BMI1,
    /// BMI2, POPCNT and LZCNT (`BMI2 = true`, only where [`has_bmi2_popcnt`] said so) and kept
    /// out of line, as upstream's are.
    #[inline(always)]
    pub(crate) fn decode_mcu_ac<const BMI2: bool, const REFINE: bool, T>(
        &mut self, reader: &mut ZReader<T>, table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if BMI2 {
            // SAFETY: BMI2 is set only on CPUs with the features these are compiled for.
            return unsafe {
                if REFINE {
                    self.decode_mcu_ac_refine_bmi2(reader, table, block)
                } else {
                    self.decode_mcu_ac_first_bmi2(reader, table, block)
                }
            };
        }
        if REFINE {
            self.decode_mcu_ac_refine(reader, table, block)
        } else {
            self.decode_mcu_ac_first(reader, table, block)
        }
    }

    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "bmi1,bmi2,popcnt,lzcnt")]
    #[inline(never)]
    unsafe fn decode_mcu_ac_first_bmi2<T>(
        &mut self, reader: &mut ZReader<T>, table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        self.decode_mcu_ac_first_body(reader, table, block)
    }

    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "bmi1,bmi2,popcnt,lzcnt")]
    #[inline(never)]
    unsafe fn decode_mcu_ac_refine_bmi2<T>(
        &mut self, reader: &mut ZReader<T>, table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        self.decode_mcu_ac_refine_body(reader, table, block)
    }

    pub(crate) fn decode_mcu_ac_first<T>(
        &mut self, reader: &mut ZReader<T>, ac_table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        self.decode_mcu_ac_first_body(reader, ac_table, block)
    }

    pub(crate) fn decode_mcu_ac_refine<T>(
        &mut self, reader: &mut ZReader<T>, table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        self.decode_mcu_ac_refine_body(reader, table, block)
    }

    #[inline(always)]
    fn decode_mcu_ac_first_body<T>(
        &mut self, reader: &mut ZReader<T>, ac_table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        let fast_ac = ac_table.ac_lookup.as_ref().unwrap();
        let bit = self.successive_low_mask;

        let mut k = self.spec_start as usize;
        let (mut symbol, mut r, mut fac);

        // EOB runs are handled in mcu_prog.rs
        'block: loop {
            self.refill(reader)?;
            // Check for marker in the stream

            symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
            fac = fast_ac[symbol as usize];
            symbol = ac_table.lookup[symbol as usize];

            if fac != 0 {
                // fast ac path
                k += ((fac >> 4) & 15) as usize; // run
                block[UN_ZIGZAG[min(k, 63)] & 63] = (fac >> 8).wrapping_mul(bit); // value
                self.drop_bits((fac & 15) as u8);
                k += 1;
            } else {
                decode_huff!(self, symbol, ac_table);

                r = symbol >> 4;
                symbol &= 15;

                if symbol != 0 {
                    k += r as usize;
                    r = self.get_bits(symbol as u8);
                    symbol = huff_extend(r, symbol);
                    block[UN_ZIGZAG[k & 63] & 63] = (symbol as i16).wrapping_mul(bit);
                    k += 1;
                } else {
                    if r != 15 {
                        self.eob_run = 1 << r;
                        self.eob_run += self.get_bits(r as u8);
                        self.eob_run -= 1;
                        break;
                    }

                    k += 16;
                }
            }

            if k > self.spec_end as usize {
                break 'block;
            }
        }
        return Ok(true);
    }
    #[allow(clippy::too_many_lines, clippy::op_ref)]
    /// Decodes one block of an AC successive-approximation refinement scan.
    ///
    /// masksub patch: a refinement scan gives one correction bit to every coefficient that is
    /// already nonzero and skips zeros (counting them as run length). Upstream walks the band
    /// one coefficient at a time; this keeps a bitmask of the nonzero coefficients in zig-zag
    /// order and jumps between them (`trailing_zeros`), which does the same reads of the bit
    /// stream in the same order and so gives the same coefficients, results and stream
    /// state, including on corrupt data (tested against `decode_mcu_ac_refine_reference`).
    #[inline(always)]
    fn decode_mcu_ac_refine_body<T>(
        &mut self,
        reader: &mut ZReader<T>,
        table: &HuffmanTable,
        block: &mut [i16; 64],
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait,
    {
        let bit = self.successive_low_mask;
        let spec_end = usize::from(self.spec_end);
        let mut k = usize::from(self.spec_start);
        // Bit j set: the coefficient at zig-zag position j is nonzero (the natural-order mask
        // permuted a byte at a time through ZIGZAG_BYTES).
        let natural = nonzero_mask(block);
        let mut nonzero = 0_u64;
        for (byte, table) in ZIGZAG_BYTES.iter().enumerate() {
            nonzero |= table[((natural >> (8 * byte)) & 0xFF) as usize];
        }

        if self.eob_run == 0 {
            loop {
                self.refill(reader)?;

                let mut symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
                symbol = table.lookup[symbol as usize];

                decode_huff!(self, symbol, table);

                let r = symbol >> 4;
                symbol &= 15;

                if symbol == 0 {
                    if r != 15 {
                        self.eob_run = 1 << r;
                        self.eob_run += self.get_bits(r as u8);
                        break;
                    }
                } else {
                    if symbol != 1 {
                        warn!("Bad Huffman code, corrupt JPEG?");
                    }
                    symbol = if self.get_bit() == 1 {
                        i32::from(bit)
                    } else {
                        i32::from(-bit)
                    };
                }

                if k <= spec_end {
                    // The walk stops at the (r + 1)-th zero from k, or at spec_end.
                    let band = band_mask(k, spec_end);
                    let mut zeros = !nonzero & band;
                    if r > 0 && k + (r as usize) <= spec_end
                        && nonzero & band_mask(k, k + r as usize) == 0
                    {
                        // The next r + 1 coefficients are all zero (the common case).
                        zeros &= u64::MAX << (k + r as usize);
                    } else {
                        for _ in 0..r {
                            zeros &= zeros.wrapping_sub(1);
                        }
                    }
                    let (stop, corrected) = if zeros != 0 {
                        let stop = zeros.trailing_zeros() as usize;
                        (stop, nonzero & band & ((1 << stop) - 1))
                    } else {
                        (spec_end, nonzero & band)
                    };
                    let n = corrected.count_ones() as u8;
                    if n <= self.bits_left {
                        // Enough bits buffered for every correction (upstream's refill check
                        // never fires): read them straight from the buffer, branch-free.
                        apply_corrections(block, corrected, self.aligned_buffer, bit);
                        self.drop_bits(n);
                    } else {
                        let mut todo = corrected;
                        while todo != 0 {
                            let j = todo.trailing_zeros() as usize;
                            todo &= todo - 1;
                            if self.bits_left < 1 {
                                self.refill(reader)?;
                                if self.bits_left < 1 && self.marker.is_some() {
                                    return Err(DecodeErrors::Format(
                                        "Marker found where not expected in refine bit"
                                            .to_string(),
                                    ));
                                }
                            }
                            let one = u64::from(self.get_bit());
                            apply_corrections(block, 1 << j, one << 63, bit);
                        }
                    }
                    k = stop;
                }

                if symbol != 0 {
                    block[UN_ZIGZAG[k & 63] & 63] = symbol as i16;
                    nonzero |= 1 << (k & 63);
                }

                k += 1;

                if k > spec_end {
                    break;
                }
            }
        }
        if self.eob_run > 0 {
            // only run if block does not consist of purely zeroes
            if nonzero & !1 != 0 {
                self.refill(reader)?;

                if k <= spec_end {
                    // Upstream checks for an empty bit buffer (and refills) after every
                    // coefficient, zero or not: a run of zeros repeats the check once per
                    // zero (it can find bits_left still 0 after a refill that stopped at a
                    // marker; the next refill then fills zeros).
                    let band = band_mask(k, spec_end);
                    let mut todo = nonzero & band;
                    let n = todo.count_ones() as u8;
                    let mut at = k;
                    if n < self.bits_left {
                        // The buffer cannot run dry, so no refill happens: take the bits at once.
                        apply_corrections(block, todo, self.aligned_buffer, bit);
                        self.drop_bits(n);
                        todo = 0;
                        at = spec_end + 1;
                    }
                    while todo != 0 {
                        let j = todo.trailing_zeros() as usize;
                        todo &= todo - 1;
                        self.refill_for_zeros(reader, j - at)?;
                        let one = u64::from(self.get_bit());
                        apply_corrections(block, 1 << j, one << 63, bit);
                        if self.bits_left < 1 {
                            self.refill(reader)?;
                        }
                        at = j + 1;
                    }
                    self.refill_for_zeros(reader, spec_end + 1 - at)?;
                }
            }
            // count a block completed in EOB run
            self.eob_run -= 1;
        }
        return Ok(true);
    }

    /// Upstream's coefficient-by-coefficient refinement (masksub patch: kept as the
    /// reference the mask-based version is tested against).
    #[cfg(test)]
    pub(crate) fn decode_mcu_ac_refine_reference<T>(
        &mut self, reader: &mut ZReader<T>, table: &HuffmanTable, block: &mut [i16; 64]
    ) -> Result<bool, DecodeErrors>
    where
        T: ZByteReaderTrait
    {
        let bit = self.successive_low_mask;

        let mut k = self.spec_start;
        let (mut symbol, mut r);

        if self.eob_run == 0 {
            'no_eob: loop {
                // Decode a coefficient from the bit stream
                self.refill(reader)?;

                symbol = self.peek_bits::<HUFF_LOOKAHEAD>();
                symbol = table.lookup[symbol as usize];

                decode_huff!(self, symbol, table);

                r = symbol >> 4;
                symbol &= 15;

                if symbol == 0 {
                    if r != 15 {
                        // EOB run is 2^r + bits
                        self.eob_run = 1 << r;
                        self.eob_run += self.get_bits(r as u8);
                        // EOB runs are handled by the eob logic
                        break 'no_eob;
                    }
                } else {
                    // libjpeg-turbo also doesn't return an error here, so let's also warn.
                    if symbol != 1 {
                        warn!("Bad Huffman code, corrupt JPEG?");
                    }
                    // get sign bit
                    // We assume we have enough bits, which should be correct for sane images
                    // since we refill by 32 above
                    if self.get_bit() == 1 {
                        symbol = i32::from(bit);
                    } else {
                        symbol = i32::from(-bit);
                    }
                }

                // Advance over already nonzero coefficients  appending
                // correction bits to the non-zeroes.
                // A correction bit is 1 if the absolute value of the coefficient must be increased

                if k <= self.spec_end {
                    'advance_nonzero: loop {
                        let coefficient = &mut block[UN_ZIGZAG[k as usize & 63] & 63];

                        if *coefficient != 0 {
                            if self.bits_left < 1 {
                                self.refill(reader)?;
                                if self.bits_left < 1 && self.marker.is_some() {
                                    return Err(DecodeErrors::Format(
                                        "Marker found where not expected in refine bit".to_string()
                                    ));
                                }
                            }
                            if self.get_bit() == 1 && (*coefficient & bit) == 0 {
                                if *coefficient > 0 {
                                    *coefficient = coefficient.wrapping_add(bit);
                                } else {
                                    *coefficient = coefficient.wrapping_sub(bit);
                                }
                            }
                        } else {
                            r -= 1;

                            if r < 0 {
                                // reached target zero coefficient.
                                break 'advance_nonzero;
                            }
                        };

                        if k == self.spec_end {
                            break 'advance_nonzero;
                        }

                        k += 1;
                    }
                }

                if symbol != 0 {
                    let pos = UN_ZIGZAG[k as usize & 63];
                    // output new non-zero coefficient.
                    block[pos & 63] = symbol as i16;
                }

                k += 1;

                if k > self.spec_end {
                    break 'no_eob;
                }
            }
        }
        if self.eob_run > 0 {
            // only run if block does not consists of purely zeroes
            if &block[1..] != &[0; 63] {
                self.refill(reader)?;

                while k <= self.spec_end {
                    let coefficient = &mut block[UN_ZIGZAG[k as usize & 63] & 63];

                    if *coefficient != 0 && self.get_bit() == 1 {
                        // check if we already modified it, if so do nothing, otherwise
                        // append the correction bit.
                        if (*coefficient & bit) == 0 {
                            if *coefficient >= 0 {
                                *coefficient = coefficient.wrapping_add(bit);
                            } else {
                                *coefficient = coefficient.wrapping_sub(bit);
                            }
                        }
                    }
                    if self.bits_left < 1 {
                        // refill at the last possible moment
                        self.refill(reader)?;
                    }
                    k += 1;
                }
            }
            // count a block completed in EOB run
            self.eob_run -= 1;
        }
        return Ok(true);
    }

    /// What upstream's refinement loop does over `zeros` zero coefficients: each checks for
    /// an empty bit buffer and refills it.
    #[inline(always)]
    fn refill_for_zeros<T>(
        &mut self,
        reader: &mut ZReader<T>,
        zeros: usize,
    ) -> Result<(), DecodeErrors>
    where
        T: ZByteReaderTrait,
    {
        for _ in 0..zeros {
            if self.bits_left >= 1 {
                break;
            }
            self.refill(reader)?;
        }
        Ok(())
    }

    pub fn update_progressive_params(&mut self, _ah: u8, al: u8, spec_start: u8, spec_end: u8) {
        self.successive_low_mask = 1i16 << al;
        self.spec_start = spec_start;
        self.spec_end = spec_end;
    }

    /// Reset the stream if we have a restart marker
    ///
    /// Restart markers indicate drop those bits in the stream and zero out
    /// everything
    #[cold]
    pub fn reset(&mut self) {
        self.bits_left = 0;
        self.marker = None;
        self.buffer = 0;
        self.aligned_buffer = 0;
        self.eob_run = 0;
    }
}

/// Do the equivalent of JPEG HUFF_EXTEND
#[inline(always)]
fn huff_extend(x: i32, s: i32) -> i32 {
    // if x<s return x else return x+offset[s] where offset[s] = ( (-1<<s)+1)
    (x) + ((((x) - (1 << ((s) - 1))) >> 31) & (((-1) << (s)) + 1))
}

const fn has_zero(v: u32) -> bool {
    // Retrieved from Stanford bithacks
    // @ https://graphics.stanford.edu/~seander/bithacks.html#ZeroInWord
    return !((((v & 0x7F7F_7F7F) + 0x7F7F_7F7F) | v) | 0x7F7F_7F7F) != 0;
}

const fn has_byte(b: u32, val: u8) -> bool {
    // Retrieved from Stanford bithacks
    // @ https://graphics.stanford.edu/~seander/bithacks.html#ZeroInWord
    has_zero(b ^ ((!0_u32 / 255) * (val as u32)))
}

// mod tests {
//     use zune_core::bytestream::ZCursor;
//     use zune_core::colorspace::ColorSpace;
//     use zune_core::options::DecoderOptions;
//
//     use crate::JpegDecoder;
//
//     #[test]
//     fn test_image() {
//         let img = "/Users/etemesi/Downloads/test_IDX_45_RAND_168601280367171438891916_minimized_837.jpg";
//         let data = std::fs::read(img).unwrap();
//         let options = DecoderOptions::new_cmd().jpeg_set_out_colorspace(ColorSpace::RGB);
//         let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&data[..]), options);
//
//         decoder.decode().unwrap();
//         println!("{:?}", decoder.options.jpeg_get_out_colorspace())
//     }
// }

/// masksub patch: the mask-based refinement against upstream's walk, on random blocks and
/// random (often corrupt) entropy-coded bytes.
#[cfg(test)]
mod refine_tests {
    use alloc::vec::Vec;

    use zune_core::bytestream::{ZCursor, ZReader};

    use super::BitStream;
    use crate::huffman::HuffmanTable;

    /// xorshift64*: no dependency, fixed sequence.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Every refinement symbol (EOB runs, ZRL, run/±1, and a bad size 2): 30 five-bit codes
    /// and 3 six-bit ones, so most bit patterns decode and `111111` is an invalid code.
    fn refine_table() -> HuffmanTable {
        let mut values = Vec::new();
        for r in 0..16u8 {
            values.push(r << 4);
            values.push((r << 4) | 1);
        }
        values.push(0x02);
        let mut bits = [0u8; 17];
        bits[5] = 30;
        bits[6] = 3;
        HuffmanTable::new_unfilled(&bits, &values, false, true).unwrap()
    }

    fn random_bytes(rng: &mut Rng) -> Vec<u8> {
        let n = rng.below(160) as usize;
        // Some streams are dense with markers, so refills stop at one with no bits left.
        let rate = if rng.below(3) == 0 { 6 } else { 40 };
        let mut out = Vec::with_capacity(n + 2);
        if rng.below(2) == 0 {
            // Clean bytes, then a marker: refills run dry exactly at it.
            for _ in 0..rng.below(12) {
                out.push(rng.next() as u8 & 0xFE);
            }
            out.extend_from_slice(&[0xFF, 0xD0 + rng.below(8) as u8]);
        }
        for _ in 0..n {
            match rng.below(rate) {
                0 => out.extend_from_slice(&[0xFF, 0x00]),
                1 => out.extend_from_slice(&[0xFF, 0xD0 + rng.below(8) as u8]),
                2 => out.extend_from_slice(&[0xFF, 0xD9]),
                3 => out.extend_from_slice(&[0xFF, rng.next() as u8]),
                _ => out.push(rng.next() as u8 & 0xFE | (rng.below(2) as u8)),
            }
        }
        out
    }

    fn random_block(rng: &mut Rng, al: u8) -> [i16; 64] {
        let mut b = [0i16; 64];
        let density = rng.below(64);
        for c in b.iter_mut() {
            if rng.below(64) < density {
                let v = if rng.below(8) == 0 {
                    rng.next() as i16
                } else {
                    ((rng.below(20) as i16) + 1) << (al + 1)
                };
                *c = if rng.below(2) == 0 {
                    v
                } else {
                    v.wrapping_neg()
                };
            }
        }
        b
    }

    #[test]
    fn mask_refinement_matches_upstream_walk() {
        // The portable copy, and the BMI2 copy where the CPU has it.
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        let copies: &[bool] = if super::has_bmi2_popcnt() { &[false, true] } else { &[false] };
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        let copies: &[bool] = &[false];
        for &bmi2 in copies {
            refinement_matches_upstream_walk(bmi2);
        }
    }

    fn refinement_matches_upstream_walk(bmi2: bool) {
        let table = refine_table();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut blocks_done, mut errors) = (0, 0);
        for _ in 0..20_000 {
            let al = rng.below(5) as u8;
            let spec_start = 1 + rng.below(63) as u8;
            let spec_end = if rng.below(20) == 0 {
                rng.below(64) as u8
            } else {
                spec_start + rng.below(u64::from(64 - spec_start)) as u8
            };
            let bytes = random_bytes(&mut rng);
            let mut fast = BitStream::new_progressive(al, spec_start, spec_end);
            let mut slow = BitStream::new_progressive(al, spec_start, spec_end);
            let mut rf = ZReader::new(ZCursor::new(&bytes[..]));
            let mut rs = ZReader::new(ZCursor::new(&bytes[..]));
            for _ in 0..1 + rng.below(24) {
                let block = random_block(&mut rng, al);
                let (mut bf, mut bs) = (block, block);
                let got = if bmi2 {
                    fast.decode_mcu_ac::<true, true, _>(&mut rf, &table, &mut bf)
                } else {
                    fast.decode_mcu_ac::<false, true, _>(&mut rf, &table, &mut bf)
                };
                let want = slow.decode_mcu_ac_refine_reference(&mut rs, &table, &mut bs);
                assert_eq!(bf, bs, "coefficients");
                assert_eq!(
                    alloc::format!("{got:?}"),
                    alloc::format!("{want:?}"),
                    "result"
                );
                assert_eq!(
                    (
                        fast.buffer,
                        fast.aligned_buffer,
                        fast.bits_left,
                        fast.marker
                    ),
                    (
                        slow.buffer,
                        slow.aligned_buffer,
                        slow.bits_left,
                        slow.marker
                    ),
                    "bit buffer"
                );
                assert_eq!(
                    (fast.eob_run, fast.overread_by, fast.seen_eoi),
                    (slow.eob_run, slow.overread_by, slow.seen_eoi),
                    "stream state"
                );
                assert_eq!(rf.position().unwrap(), rs.position().unwrap(), "bytes read");
                blocks_done += 1;
                if got.is_err() {
                    errors += 1;
                    break;
                }
            }
        }
        // Both the clean and the corrupt paths were exercised.
        assert!(
            blocks_done > 100_000 && errors > 1_000,
            "{blocks_done} blocks, {errors} errors (bmi2 copy: {bmi2})"
        );
    }
}
