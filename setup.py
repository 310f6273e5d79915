"""Packaging for ravend: Debian builds it with pybuild; the version is in ravend/_version.py."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "ravend/_version.py").read_text())[1]

setup(
    name="ravend",
    version=VERSION,
    description="Dependable energy logger for Rainforest RAVEn and EMU-2 meter sticks",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    # The SQL migrations live in the top-level sql/ folder and ship as the package ravend.sql.
    packages=["ravend", "ravend.protocol", "ravend.simulator", "ravend.sinks", "ravend.cli",
              "ravend.db", "ravend.runtime", "ravend.web", "ravend.sql"],
    package_dir={"ravend.sql": "sql"},
    package_data={"ravend.sql": ["sqlite/*.sql", "mysql/*.sql"], "ravend": ["py.typed"],
                  "ravend.web": ["static/*"]},
    install_requires=["pyserial"],
    extras_require={
        "systemd": ["sdnotify"],
        "daemon": ["python-daemon"],
        "mysql": ["mysqlclient"],
        "mqtt": ["paho-mqtt"],
        "mongo": ["pymongo"],
        "metrics": ["prometheus-client"],
        "web": ["waitress", "bcrypt"],
    },
    entry_points={
        "console_scripts": [
            "ravend = ravend.cli.ravend:main",
            "ravenctl = ravend.cli.ravenctl:main",
            "ravend-repeater = ravend.cli.repeater:main",
            "ravend-mongo-ingest = ravend.cli.mongo_ingest:main",
            "ravend-web = ravend.cli.web:main",
        ]
    },
    classifiers=[
        "Environment :: No Input/Output (Daemon)",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: Home Automation",
    ],
)
