"""``python -m training.synthetic OUT --num-videos N --seed S --split train [--mp4]``."""

from .generate import main

raise SystemExit(main())
