"""A PEP 517 build backend for Ordo's Python package, standard library only.

It builds a pure-Python wheel of ordo/*.py (version from ordo/_version.py), an sdist, and an
editable wheel (a .pth file naming this directory), so pip installs the package without network
access or setuptools.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_NAME = "ordo"
_TAG = "py3-none-any"
# zip and tar entries carry a fixed time, so the same tree builds the same archive
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _version():
    with open(os.path.join(_HERE, "ordo", "_version.py"), encoding="utf-8") as f:
        m = re.search(r'__version__ = "([^"]+)"', f.read())
    if m is None:
        raise RuntimeError("ordo/_version.py has no __version__")
    return m.group(1)


def _sources():
    d = os.path.join(_HERE, "ordo")
    return sorted("ordo/" + n for n in os.listdir(d) if n.endswith(".py"))


def _metadata():
    return (
        "Metadata-Version: 2.1\n"
        "Name: %s\n"
        "Version: %s\n"
        "Summary: Ordo's Python package: @flow and @task, run locally or deployed to Ordo\n"
        "Requires-Python: >=3.9\n" % (_NAME, _version())
    )


def _wheel_file():
    return "Wheel-Version: 1.0\nGenerator: ordo_build\nRoot-Is-Purelib: true\nTag: %s\n" % _TAG


def _dist_info():
    return "%s-%s.dist-info" % (_NAME, _version())


def _write_wheel(wheel_directory, files):
    """files: [(archive name, bytes)]; adds the dist-info and RECORD, returns the wheel's name."""
    info = _dist_info()
    files = list(files) + [
        (info + "/METADATA", _metadata().encode()),
        (info + "/WHEEL", _wheel_file().encode()),
        (info + "/top_level.txt", (_NAME + "\n").encode()),
    ]
    record = []
    name = "%s-%s-%s.whl" % (_NAME, _version(), _TAG)
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files:
            zi = zipfile.ZipInfo(arc, _EPOCH)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (arc, digest, len(data)))
        record.append(info + "/RECORD,,")
        zi = zipfile.ZipInfo(info + "/RECORD", _EPOCH)
        zi.external_attr = 0o644 << 16
        z.writestr(zi, "\n".join(record) + "\n")
    return name


def _read(rel):
    with open(os.path.join(_HERE, rel), "rb") as f:
        return f.read()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = _dist_info()
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    for fname, text in (("METADATA", _metadata()), ("WHEEL", _wheel_file())):
        with open(os.path.join(metadata_directory, info, fname), "w", encoding="utf-8") as f:
            f.write(text)
    return info


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [(rel, _read(rel)) for rel in _sources()])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [("_ordo_editable.pth", (_HERE + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (_NAME, _version())
    name = base + ".tar.gz"
    members = ["pyproject.toml", "ordo_build.py"] + _sources()
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:

        def add(arc, data):
            ti = tarfile.TarInfo(base + "/" + arc)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = int(time.mktime(_EPOCH + (0, 0, -1)))
            tar.addfile(ti, io.BytesIO(data))

        for rel in members:
            add(rel, _read(rel))
        add("PKG-INFO", _metadata().encode())
    return name
