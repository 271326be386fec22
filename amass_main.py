"""AMASS entry point with the published command line: `python amass_main.py --mode train --cfg amass ...`."""
from spard.cli import amass_main

if __name__ == "__main__":
    amass_main()
