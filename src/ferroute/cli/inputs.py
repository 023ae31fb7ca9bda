"""What ``ferroute route`` and ``calibrate-site`` take as input: files, folders (recursive),
globs and ``.txt`` lists, expanded in argument order, with what cannot be read said per path."""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "expand_inputs", "input_key", "problem", "readable_file"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def expand_inputs(paths: list[str]) -> tuple[list[str], set[str]]:
    """Files from paths, folders (recursive: images and videos), globs and list files (``.txt``:
    one path or URI a line), in argument order, with each path that matches nothing or cannot
    be read (a dangling link, a folder named like an image, an unreadable file, folder or list)
    kept at its place, to be reported as an error row; also the set of those paths."""
    import glob
    import os

    from ..vision.video import VIDEO_SUFFIXES

    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    entries: list[str] = []
    missing: set[str] = set()

    def bad(p: str) -> None:
        entries.append(p)
        missing.add(p)

    for p in paths:
        path = Path(p)
        try:
            is_list, is_dir, exists = path.suffix.lower() in (".txt", ".lst") and path.is_file(), path.is_dir(), path.exists()
        except OSError:  # e.g. a file inside a folder this user may not enter
            bad(p)
            continue
        if is_list:  # a list of paths or URIs, one per line
            try:
                listed = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            except (OSError, UnicodeDecodeError):
                bad(p)
                continue
            entries += listed
            missing.update(x for x in listed if "://" not in x and not readable_file(x))
            continue
        if is_dir:
            unreadable: list[str] = []
            found = []
            for root, dirs, files in os.walk(path, onerror=lambda e: unreadable.append(e.filename), followlinks=False):
                dirs.sort()
                for name in files + [d for d in dirs if Path(d).suffix.lower() in suffixes]:
                    f = Path(root) / name
                    if f.suffix.lower() in suffixes:
                        found.append(f)
            for f in sorted(found) + [Path(u) for u in sorted(unreadable)]:
                entries.append(str(f))
                if str(f) in unreadable or not readable_file(str(f)):  # reported, not skipped
                    missing.add(str(f))
        elif exists:
            entries.append(str(path))
            if not readable_file(str(path)):
                missing.add(str(path))
        elif any(c in p for c in "*?[") and (hits := sorted(h for h in glob.glob(p, recursive=True) if Path(h).is_file())):
            entries += hits
        else:
            bad(p)
    return entries, missing


def input_key(p: str) -> str:
    """How ``--resume`` recognises an input: a URI as written, a path resolved."""
    import os

    return p if "://" in p else os.path.realpath(p)


def readable_file(p: str) -> bool:
    """A regular file this process may read."""
    import os

    try:
        return Path(p).is_file() and os.access(p, os.R_OK)
    except OSError:
        return False


def problem(p: str) -> str:
    """Why an input could not be used, in words, with what to do."""
    import os

    path = Path(p)
    try:
        if path.is_dir():
            return f"{p}: a folder that cannot be read (permission denied, or named like an image); check its permissions"
        if path.exists() and not os.access(p, os.R_OK):
            return f"{p}: permission denied (check the file's and its folders' permissions)"
        if path.exists() or path.is_symlink():
            return f"{p}: not a readable file (dangling link or a folder) (check the path)"
        if path.suffix.lower() in (".txt", ".lst") and path.parent.exists() and not os.access(path.parent, os.X_OK):
            return f"{p}: permission denied (check the folder's permissions)"
    except OSError as exc:
        return f"{p}: cannot be read ({exc.strerror or exc}); check the file's and its folders' permissions"
    return f"{p}: file not found (check the path)"
