#!/usr/bin/env bash
# Set up napari-bloodcell on a fresh Debian/Ubuntu machine: the system libraries napari's Qt needs (also under
# Xvfb), a virtual environment in .venv, and the package with its dependencies.
#   (no option)  PyQt5, the binding every test runs under
#   --pyqt6      PyQt6 instead (recommended for a desktop: no deprecation pop-up from napari 0.9)
#   --test       PyQt5 + PyQt6 + the test extras: CI runs the GUI tests under each (QT_API=pyqt6 picks Qt6)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="all"
for arg in "$@"; do
  case "$arg" in
    --test) extras="all,pyqt6,testing" ;;
    --pyqt6) extras="pyqt6" ;;
    *) echo "setup: unknown option $arg (allowed: --test, --pyqt6)" >&2; exit 2 ;;
  esac
done

apt_packages=(xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-xkb1 libxcb-randr0 libxcb-xfixes0 libxcb-cursor0)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing napari-bloodcell[$extras] into .venv (torch is large the first time)"
.venv/bin/python -m pip install -q -e ".[$extras]"
echo "setup: done; commands are in .venv/bin (bloodcell, napari, pytest)"
