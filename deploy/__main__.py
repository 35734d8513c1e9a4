"""``python -m deploy {export,edge,serve} …`` (the same as ``splitcv export|edge|serve …``)."""

from deploy.cli import main

main()
