"""Builds `distill_prompts.txt`: templated instructions over many topics and task kinds.

No data set can be downloaded where specdec is developed, so the draft's training prompts are
written here: task templates (explain, code, code-edit, rewrite, summarize, creative, list, qa,
compare, howto) filled with topics, deterministic for a fixed seed. The target answers them
(`specdec distill`), and its answers are the draft's training text. Prompts that appear in the
evaluation set (`--exclude`, e.g. dev.jsonl) are dropped, so the measured acceptance is held out.

    python -m specdec.distill.promptgen --exclude /work/shared/prompts/dev.jsonl > specdec/distill_prompts.txt

One prompt per line; a literal backslash-n in a line stands for a newline.
"""

from __future__ import annotations

import argparse
import json
import random

SCIENCE = [
    "black holes", "plate tectonics", "the water cycle", "photosynthesis in algae", "DNA replication", "vaccines",
    "the greenhouse effect", "ocean tides", "volcanoes", "earthquakes", "rainbows", "lightning", "magnetism",
    "electric circuits", "nuclear fusion", "the immune system", "antibiotics", "evolution by natural selection",
    "the periodic table", "chemical bonds", "sound waves", "the speed of light", "gravity", "entropy",
    "the Big Bang", "climate change", "coral reefs", "bird migration", "the human heart", "sleep", "memory",
    "the nervous system", "digestion", "solar panels", "wind turbines", "batteries", "semiconductors",
    "lasers", "radioactivity", "the moon's phases", "comets", "Mars", "Jupiter", "exoplanets", "glaciers",
    "deserts", "rainforests", "soil erosion", "bees and pollination", "fungi", "viruses", "bacteria",
    "friction", "buoyancy", "air pressure", "the ozone layer", "hurricanes", "fog", "snowflakes", "auroras",
]
TECH = [
    "binary search", "recursion", "a linked list", "a binary tree", "a stack", "a queue", "a heap",
    "dynamic programming", "big-O notation", "garbage collection", "virtual memory", "TCP and UDP",
    "DNS", "HTTP cookies", "REST APIs", "databases indexes", "SQL joins", "caching", "load balancing",
    "containers", "version control with git", "unit testing", "continuous integration", "encryption",
    "public-key cryptography", "passwords and hashing", "compilers", "interpreters", "operating systems",
    "machine learning", "neural networks", "gradient descent", "overfitting", "cloud computing",
    "regular expressions", "JSON", "object-oriented programming", "functional programming", "APIs",
    "multithreading", "deadlocks", "sorting algorithms", "quicksort", "merge sort", "graphs", "Dijkstra's algorithm",
    "the internet", "Wi-Fi", "GPS", "email", "web browsers", "search engines", "spreadsheets", "pixels",
]
EVERYDAY = [
    "saving money", "cooking rice", "baking bread", "learning a new language", "running a marathon",
    "growing tomatoes", "keeping a houseplant alive", "writing a resume", "preparing for a job interview",
    "public speaking", "time management", "meditation", "drinking enough water", "getting better sleep",
    "starting a small business", "budgeting for a trip", "training a puppy", "caring for a cat",
    "reducing stress", "making friends in a new city", "learning to swim", "riding a motorcycle safely",
    "composting", "recycling", "cleaning a kitchen", "organizing a closet", "painting a room", "fixing a flat tire",
    "brewing coffee", "making tea", "planning a birthday party", "writing a thank-you note", "studying for exams",
    "taking notes", "reading more books", "staying motivated", "working from home", "negotiating a salary",
    "buying a used car", "choosing a laptop", "learning guitar", "drawing portraits", "taking better photos",
    "hiking safely", "camping in the rain", "first aid for a small cut", "eating healthy on a budget",
]
HISTORY = [
    "the Roman Empire", "ancient Egypt", "the printing press", "the Industrial Revolution", "the Renaissance",
    "the French Revolution", "the Silk Road", "the Apollo 11 mission", "the invention of the telephone",
    "the Wright brothers", "the Great Wall of China", "the Maya civilization", "the Vikings", "the Olympic Games",
    "the history of the bicycle", "the invention of paper", "the steam engine", "the first computers",
    "the Magna Carta", "the fall of the Berlin Wall", "the history of chess", "the history of jazz",
    "the invention of the light bulb", "ancient Greece", "the Ottoman Empire", "the Incas",
]
TOPICS = SCIENCE + TECH + EVERYDAY + HISTORY

EXPLAIN = [
    "Explain {t} in simple terms.", "Explain {t} to a ten-year-old.", "What is {t}?", "How does {t} work?",
    "Give a short explanation of {t}.", "Why is {t} important?", "Describe {t} in a few sentences.",
    "Explain the main idea behind {t}.", "What are the key facts about {t}?", "Can you explain {t}?",
    "What should a beginner know about {t}?", "Explain {t} and give an example.",
]
LIST = [
    "List five facts about {t}.", "Give me three tips for {t}.", "List the pros and cons of {t}.",
    "List five common mistakes people make with {t}.", "Give me a checklist for {t}.",
    "List seven interesting things about {t}.", "What are the steps for {t}? Use a numbered list.",
    "Give me four questions to ask about {t}.", "Make a short list of resources for learning about {t}.",
]
QA = [
    "What is the most common misconception about {t}?", "Who first studied {t}?", "Is {t} dangerous?",
    "How has {t} changed over time?", "What would happen without {t}?", "How is {t} used today?",
    "What is one surprising fact about {t}?", "Why do people find {t} difficult?",
]
HOWTO = ["How do I get started with {t}?", "What is the best way to approach {t}?", "Give me advice on {t}."]
COMPARE = ["Compare {a} and {b}.", "What is the difference between {a} and {b}?", "Which is more important, {a} or {b}? Explain.",
           "How are {a} and {b} related?"]
CREATIVE_KINDS = ["a haiku", "a short poem", "a limerick", "a short story", "a two-line rhyme", "a fable",
                  "a diary entry", "a song chorus", "a motivational speech", "a product description", "a tweet",
                  "a dialogue between two friends", "an opening paragraph of a novel", "a riddle", "a sonnet"]
CREATIVE_SUBJECTS = [
    "the ocean", "a lonely lighthouse", "a dragon who is afraid of fire", "a rainy Monday", "a city at night",
    "a lost key", "the first day of school", "a talking tree", "a cup of coffee", "winter mornings", "a brave mouse",
    "an old clock", "a spaceship crew", "friendship", "a garden in spring", "a detective cat", "the desert wind",
    "a forgotten library", "a robot chef", "a mountain village", "the last train home", "a kite", "the stars",
    "a dog who wants to fly", "a grandmother's recipe", "a snowman in summer", "a pirate who hates water",
]
CODE_TASKS = [
    "reverses a string", "checks whether a string is a palindrome", "computes the factorial of n",
    "returns the n-th Fibonacci number", "finds the largest element in a list", "removes duplicates from a list",
    "counts the vowels in a string", "sorts a list of dictionaries by a key", "merges two sorted lists",
    "flattens a nested list", "computes the average of a list of numbers", "converts Celsius to Fahrenheit",
    "checks whether two strings are anagrams", "counts word frequencies in a text", "implements binary search",
    "implements bubble sort", "returns the greatest common divisor of two numbers", "validates an email address",
    "reads a CSV file and prints each row", "finds the second largest number in a list", "transposes a matrix",
    "generates all permutations of a list", "capitalizes the first letter of each word", "computes compound interest",
    "checks whether a year is a leap year", "implements a stack class", "implements a queue with two stacks",
    "sums the digits of an integer", "converts a decimal number to binary", "finds the longest word in a sentence",
    "rotates a list by k positions", "chunks a list into pieces of size n", "returns the intersection of two lists",
    "parses a date string", "retries a function call three times", "memoizes a function",
]
LANGS = ["Python", "Python", "Python", "JavaScript", "Java", "C", "C++", "Go", "Rust", "TypeScript", "bash", "Ruby"]
SQL_TASKS = [
    "returns all employees hired after 2020", "counts orders per customer", "finds the average salary by department",
    "lists products that were never ordered", "returns the five most recent blog posts",
    "finds duplicate email addresses in a users table", "returns the total sales per month",
    "deletes rows older than one year from a logs table", "joins orders with customers and shows names",
]
CODE_SNIPPETS = [
    "def f(l):\\n    r = []\\n    for i in l:\\n        if i % 2 == 0:\\n            r.append(i)\\n    return r",
    "def area(w, h):\\n    return w * h\\n\\ndef perimeter(w, h):\\n    return 2 * (w + h)",
    "total = 0\\nfor i in range(len(items)):\\n    total = total + items[i]\\nprint(total)",
    "function sum(arr) {\\n  var s = 0;\\n  for (var i = 0; i < arr.length; i++) { s += arr[i]; }\\n  return s;\\n}",
    "def greet(name):\\n    print('Hello ' + name)\\n\\ngreet('Ann')",
    "def max_of(a, b, c):\\n    m = a\\n    if b > m:\\n        m = b\\n    if c > m:\\n        m = c\\n    return m",
    "data = {}\\nfor word in text.split():\\n    if word in data:\\n        data[word] += 1\\n    else:\\n        data[word] = 1",
    "class Counter:\\n    def __init__(self):\\n        self.n = 0\\n    def inc(self):\\n        self.n += 1",
    "def read(path):\\n    f = open(path)\\n    s = f.read()\\n    f.close()\\n    return s",
    "nums = [1, 2, 3, 4]\\nsquares = []\\nfor n in nums:\\n    squares.append(n * n)",
]
CODE_EDITS = [
    "Add type hints to this Python code and return it:\\n{c}", "Add docstrings to this code:\\n{c}",
    "Rewrite this code to be more idiomatic:\\n{c}", "Explain what this code does:\\n{c}",
    "Find any bugs in this code and fix them:\\n{c}", "Add comments to this code:\\n{c}",
    "Rename the variables in this code to clearer names and return the whole code:\\n{c}",
    "Convert this code to use a list comprehension or a built-in function where possible:\\n{c}",
]
SENTENCES = [
    "The meeting has been postponed due to unforeseen circumstances beyond our control.",
    "Notwithstanding the inclement weather, the event proceeded as scheduled.",
    "i dont know where he go yesterday but it were late",
    "The utilization of public transportation is encouraged for the purpose of reducing emissions.",
    "She have three cat and they is very playful.",
    "Due to the fact that the store was closed, we were unable to purchase groceries.",
    "The company is going to implement a new policy regarding remote work arrangements.",
    "Their going to the park tomorrow if it dont rain.",
    "It is imperative that all personnel vacate the premises immediately.",
    "The results of the experiment were indicative of a significant correlation.",
    "me and my brother plays football every weekends",
    "We regret to inform you that your application has not been successful at this time.",
]
REWRITE = [
    "Rewrite this sentence in plain English: '{s}'", "Fix the grammar in this text: '{s}'",
    "Make this sentence more formal: '{s}'", "Make this sentence shorter: '{s}'",
    "Rewrite this in a friendly tone: '{s}'", "Paraphrase: '{s}'", "Translate this into simple words: '{s}'",
]
ITEM_LISTS = ["apples, bananas, oranges, grapes", "hammer, nails, saw, tape measure", "red, green, blue, yellow",
              "Monday, Wednesday, Friday", "pen, notebook, laptop, charger", "running, swimming, cycling",
              "tomatoes, onions, garlic, basil, olive oil", "passport, tickets, wallet, phone"]
PASSAGES = [
    "The town library will extend its opening hours starting next month. It will now open at 8 am and close at 9 pm on weekdays. The change follows a survey in which most residents asked for evening access. Funding comes from a new grant.",
    "Honeybees communicate the location of flowers through a dance. The angle of the dance shows the direction relative to the sun, and its length shows the distance. Scientists decoded this behavior in the twentieth century.",
    "The company reported higher profits this quarter, mainly because of strong online sales. However, costs for shipping rose sharply, and the management warned that the next quarter may be slower.",
    "Regular exercise improves heart health, mood and sleep. Experts recommend at least 150 minutes of moderate activity per week, such as brisk walking, along with some strength training.",
    "A new bridge across the river opened on Saturday after three years of construction. It has two lanes for cars, a bike path and a walkway, and it is expected to cut commuting times by fifteen minutes.",
    "Volcanic eruptions can cool the planet for a year or two, because ash and sulfur gases in the upper atmosphere reflect sunlight. The 1815 eruption of Mount Tambora led to a 'year without a summer'.",
    "The school board voted to start classes thirty minutes later next year. Supporters say teenagers need more sleep, while some parents worry about after-school activities and work schedules.",
    "Octopuses have three hearts and blue blood. They can change the color and texture of their skin in a fraction of a second, and they are known for solving puzzles and escaping from tanks.",
    "Electric cars are becoming cheaper as battery prices fall. Many countries are building more charging stations, but drivers in rural areas still worry about range on long trips.",
    "The museum's new exhibit shows tools and jewelry from the Bronze Age. Visitors can also try a virtual reality tour of an ancient village reconstructed from archaeological finds.",
]
SUMMARIZE = ["Summarize: {p}", "Summarize in one sentence: {p}", "Summarize in two sentences: {p}",
             "Give the main point of this text: {p}", "Write a short headline for this text: {p}"]
MISC = [
    "Tell me a joke.", "Tell me a fun fact.", "Hi! How are you?", "What can you help me with?", "Who are you?",
    "Give me a motivational quote.", "Suggest a name for a coffee shop.", "What should I cook for dinner tonight?",
    "Recommend three books for a long flight.", "Plan a one-day trip to a big city.", "Write a short email asking for a day off.",
    "Write a polite reply declining a meeting invitation.", "Give me a weekly workout plan.", "What is 17 times 23?",
    "Solve for x: 3x + 5 = 20.", "What is the square root of 144?", "Convert 5 kilometers to miles.",
    "How many minutes are in a week?", "What is the capital of Japan?", "Name the planets of the solar system.",
    "What is the boiling point of water in Fahrenheit?", "Write a short bio for a software engineer.",
    "Give me a recipe for pancakes.", "Write a shopping list for a week of healthy meals.",
    "Suggest five names for a pet turtle.", "Write a short welcome message for new team members.",
]


def build_prompts(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    prompts: list[str] = []
    for t in TOPICS:
        prompts += [tpl.format(t=t) for tpl in rng.sample(EXPLAIN, 3)]
        prompts += [tpl.format(t=t) for tpl in rng.sample(LIST, 2)]
        prompts.append(rng.choice(QA).format(t=t))
        if t in EVERYDAY:
            prompts.append(rng.choice(HOWTO).format(t=t))
    for _ in range(120):
        a, b = rng.sample(TOPICS, 2)
        prompts.append(rng.choice(COMPARE).format(a=a, b=b))
    for _ in range(260):
        prompts.append(f"Write {rng.choice(CREATIVE_KINDS)} about {rng.choice(CREATIVE_SUBJECTS)}.")
    for task in CODE_TASKS:
        for lang in rng.sample(LANGS, 3):
            prompts.append(f"Write a {lang} function that {task}.")
        prompts.append(f"Write a program that {task} and explain how it works.")
    for task in SQL_TASKS:
        prompts.append(f"Write a SQL query that {task}.")
    for c in CODE_SNIPPETS:
        prompts += [tpl.format(c=c) for tpl in rng.sample(CODE_EDITS, 4)]
    for s in SENTENCES:
        prompts += [tpl.format(s=s) for tpl in rng.sample(REWRITE, 4)]
    for items in ITEM_LISTS:
        prompts.append(f"Turn this list into one sentence: {items}.")
        prompts.append(f"Sort this list alphabetically: {items}.")
    for p in PASSAGES:
        prompts += [tpl.format(p=p) for tpl in rng.sample(SUMMARIZE, 3)]
    prompts += MISC
    seen, unique = set(), []
    for p in prompts:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    rng.shuffle(unique)
    return unique


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude", action="append", default=[], help="a .jsonl evaluation set whose prompts to drop")
    args = parser.parse_args()
    excluded = set()
    for path in args.exclude:
        for line in open(path, encoding="utf-8"):
            record = json.loads(line)
            for message in record.get("messages", []):
                excluded.add(message["content"].strip().replace("\n", "\\n"))
            if "prompt" in record:
                excluded.add(record["prompt"].strip().replace("\n", "\\n"))
    for prompt in build_prompts(args.seed):
        if prompt not in excluded:
            print(prompt)


if __name__ == "__main__":
    main()
