"""Word lists the tests and the benchmarks check labels against."""

# The function words of issue 8 that no label may hold (test_keyphrases.py checks the list,
# benchmarks/hierarchy.py counts the labels holding one).
_LISTED = (
    "i me my mine we our you your he she it its they them their this that these those is are was "
    "were be been being am do does did doing have has had having a an the and but or if of at by "
    "for with to from in on as so than then there here what which who whom when where why how can "
    "could will would shall should may might must not no yes just very also too please thanks hi "
    "hello"
)
ISSUE_FUNCTION_WORDS = frozenset(_LISTED.split())
