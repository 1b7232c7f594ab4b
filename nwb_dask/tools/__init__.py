"""Whole-file tools, each verified and atomic: repack, convert, consolidate, info, and the migrations of older files."""
