# plotext 5.2.7: simple_stacked_bar() of all-zero data scales the bars by
# dx = max / width == 0 and divides each value by it inside a nested list
# comprehension (issue #153); 5.2.8 scales by 1 when the maximum is 0.
import plotext as plt

plt.simple_stacked_bar(["foo"], [[0]], width=40)
plt.show()
