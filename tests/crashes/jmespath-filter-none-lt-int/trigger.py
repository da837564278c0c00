# jmespath 0.9.0: an ordering comparator in a filter hands None straight to
# operator.lt when the field is null (issue #117); the spec says the comparison
# yields null and the element is filtered out.
import jmespath

print(jmespath.search('[?a < `2`].b', [{'a': None, 'b': 1}, {'a': 1, 'b': 2}]))
